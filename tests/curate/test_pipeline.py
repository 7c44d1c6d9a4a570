"""Tests of curate/: every stage on small fixtures (tests/fixtures/curate), the selector's law,
resumability, and decontamination of MATH-500 inside the full MATH test split (shared data).

Model-driven stages run here with FakeLLM, a deterministic stand-in with the engine's
generate() interface; tests/test_curate_engine.py runs them through the real engine.
"""
import hashlib
import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from s1.curate import decontam, domains, quality, sources
from s1.curate.pipeline import STAGES, Config, Pipeline
from s1.curate.select import rank_weights, select
from s1.curate.text import last_boxed, normalize, question_id, word_ngrams

FIX = Path(__file__).parents[1] / "fixtures" / "curate"
POOL = str(FIX / "pool")
EVAL = str(FIX / "eval")


# --------------------------------------------------------------------------------- helpers
@dataclass
class FakeOut:
    thinking: str
    answer: str
    text: str
    finish_reason: str = "stop"
    num_thinking_tokens: int = 0
    num_waits_used: int = 0


class FakeLLM:
    """Deterministic engine stand-in: output depends only on (prompt, seed).

    `knows`: question -> answer it answers correctly (a "student"); `fail_after`: raise after this
    many generate() calls (simulates a killed run); `classify`: answer MSC codes for raw prompts.
    """

    def __init__(self, knows=None, fail_after=None):
        self.knows = knows or {}
        self.fail_after = fail_after
        self.calls = 0
        self.prompts = []

    def generate(self, prompts, params, raw=False, use_tqdm=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        params = params if isinstance(params, list) else [params] * len(prompts)
        outs = []
        for p, sp in zip(prompts, params):
            self.prompts.append(p)
            h = int(hashlib.sha1(f"{p}|{sp.seed}".encode()).hexdigest(), 16)
            if raw:   # domain classification prompt: answer a code from the question's hash
                code = ["05", "11", "51", "60"][h % 4]
                outs.append(FakeOut("", "", f"{code}"))
                continue
            n = 1 + h % 37
            thinking = " ".join(f"step{j}" for j in range(n))
            ans = self.knows.get(p, str(h % 1000 + 100000))
            outs.append(FakeOut(thinking, f"Final Answer: \\boxed{{{ans}}}", thinking + ans, num_thinking_tokens=n))
        return outs


def fake_factory(llms: dict):
    def factory(path, device):
        return llms[path]
    return factory


def run_pipeline(out, llms, stages=STAGES, **kw):
    cfg = Config(out=str(out), pool=[POOL], eval_sets=[EVAL], teacher="teacher", students=["student"],
                 size=kw.pop("size", 6), seed=0, batch_size=3, progress=False,
                 teacher_params={"max_thinking_tokens": 16}, **kw)
    pipe = Pipeline(cfg, llm_factory=fake_factory(llms), log=lambda m: None)
    pipe.run(stages)
    return pipe


def chi2_sf(x: float, k: int) -> float:
    """Survival function of the chi-square distribution (regularized upper gamma Q(k/2, x/2))."""
    a, x = k / 2.0, x / 2.0
    if x < a + 1:   # series for P, then Q = 1 - P
        term = total = 1.0 / a
        for n in range(1, 500):
            term *= x / (a + n)
            total += term
        return 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    b, c, d = x + 1 - a, 1e300, 1.0 / (x + 1 - a)   # continued fraction (Numerical Recipes gcf)
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = 1.0 / (an * d + b)
        c = b + an / c
        h *= d * c
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


# --------------------------------------------------------------------------------- text / sources
def test_normalization_and_ids():
    assert normalize("  Find\tThe \n\n AREA ") == "find the area"
    assert question_id("Find the AREA.") == question_id("find  the\narea.")
    assert question_id("Find the area.") != question_id("Find the volume.")
    assert word_ngrams("a b c", 8) == {"a b c"}
    assert len(word_ngrams(" ".join(map(str, range(10))), 8)) == 3
    assert last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{x^{2}}") == "x^{2}"


def test_sources_fixture_pool():
    recs, st = sources.load_sources([POOL], progress=False)
    ps = st["per_source"]
    assert ps["aime_1983_2024"] == {"rows": 4, "kept": 3, "filtered": 1, "malformed": 0}   # 2023 row dropped
    assert {k: v["kept"] for k, v in ps.items()} == {"aime_1983_2024": 3, "math_test": 4, "math_train": 4,
                                                     "olympiadbench": 2, "omni_math_rule": 5}
    assert st["errors"] == []
    by_src = {}
    for r in recs:
        by_src.setdefault(r["source_type"], []).append(r)
        assert set(r) == {"id", "question", "solution", "answer", "cot_type", "source_type", "metadata"}
        assert r["id"] == question_id(r["question"])
    assert "\n" in by_src["aime_1983_2024"][1]["question"]              # multi-line CSV field kept
    assert by_src["math_test"][0]["answer"] == "22"                      # from \boxed{} of the solution
    ob = by_src["olympiadbench"]
    assert ob[0]["answer"] == "1,2,3" and ob[0]["metadata"]["subfield"] == "Algebra"
    assert ob[1]["question"].startswith("A game is played")               # context prepended
    assert ob[1]["solution"] == "The first player wins by symmetry.\n\nSecond paragraph."
    assert by_src["math_train"][0]["metadata"]["type"] == "Prealgebra"
    # keeping later AIME years is a setting
    recs2, _ = sources.load_sources([str(FIX / "pool" / "aime_1983_2024")], aime_max_year=None, progress=False)
    assert len(recs2) == 4


def test_malformed_rows_reported_with_source_and_line():
    recs, st = sources.load_sources([str(FIX / "malformed")], progress=False)
    assert len(recs) == 3            # the one good row of each file survives
    errs = {(e["source"], e["line"]): e["reason"] for e in st["errors"]}
    assert set(errs) == {("aime_1983_2024", 3), ("aime_1983_2024", 4), ("math_train", 3), ("math_train", 4),
                         ("omni_math_rule", 2), ("omni_math_rule", 4), ("omni_math_rule", 5)}
    assert "5 fields, header has 6" in errs[("aime_1983_2024", 3)]
    assert "Year" in errs[("aime_1983_2024", 4)]
    assert "invalid JSON" in errs[("omni_math_rule", 2)]
    assert "missing field 'problem'" in errs[("omni_math_rule", 5)]
    assert "missing field 'problem'" in errs[("math_train", 3)]
    assert all(e["path"].endswith((".csv", ".json", ".jsonl")) for e in st["errors"])
    assert st["per_source"]["omni_math_rule"]["malformed"] == 3


def test_generic_and_datasets_sources(tmp_path):
    import datasets

    rows = [{"problem": "What is the sum of the interior angles of a convex hexagon in degrees?", "answer": "720", "x": 1},
            {"question": "Name any prime number larger than ten but smaller than twelve please.", "final_answer": ["11"]}]
    datasets.Dataset.from_list([rows[0]]).save_to_disk(str(tmp_path / "ds"))
    recs, st = sources.load_sources([str(tmp_path / "ds")], progress=False)
    assert recs[0]["answer"] == "720" and recs[0]["metadata"] == {"x": 1} and recs[0]["source_type"] == "ds"
    f = tmp_path / "extra.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs, st = sources.load_sources([str(f)], progress=False)
    assert [r["answer"] for r in recs] == ["720", "11"] and recs[0]["source_type"] == "extra"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.load_sources([str(tmp_path / "nope")], progress=False)


# --------------------------------------------------------------------------------- decontamination
def test_decontam_fixture():
    recs, _ = sources.load_sources([POOL], progress=False)
    ev = decontam.load_eval_questions([EVAL])
    kept, st, matched = decontam.decontaminate(recs, ev, progress=False)
    assert st["per_source"]["math_test"]["contaminated"] == 1       # 8-gram match despite case/spacing
    assert st["per_source"]["omni_math_rule"]["duplicate"] == 1     # same question up to case/whitespace
    assert st["contaminated"] == 1 and st["duplicates"] == 1 and len(kept) == len(recs) - 2
    qs = [r["question"] for r in kept]
    assert any(q.startswith("Let g(x)") for q in qs)                # only 7 shared words: kept
    assert not any(q.startswith("Let  f(x)") for q in qs)
    assert matched == {"mini": [0]}
    assert len({r["id"] for r in kept}) == len(kept)


def test_decontam_finds_all_of_math500_in_math_test(shared_data):
    recs, _ = sources.load_sources([str(shared_data / "pool" / "math_test")], progress=False)
    ev = decontam.load_eval_questions([str(shared_data / "eval" / "math500")])
    assert len(ev["math500"]) == 500
    kept, st, matched = decontam.decontaminate(recs, ev, progress=False)
    assert matched["math500"] == list(range(500))                   # every MATH-500 problem matched
    kept_ids = {r["id"] for r in kept}
    # and the pool's own copy of every MATH-500 problem is among the removed questions
    pool_ids = {r["id"] for r in recs}
    m500_ids = {question_id(q) for q in ev["math500"]}
    assert len(m500_ids & pool_ids) == 500
    assert not (m500_ids & kept_ids)
    assert st["contaminated"] >= 500 and st["kept"] == 5000 - st["contaminated"] - st["duplicates"]


# --------------------------------------------------------------------------------- quality
def _rec(q, **kw):
    r = {"id": question_id(q), "question": q, "answer": "1", "solution": "", "source_type": "omni_math_rule",
         "thinking": "think", "attempt": "1", "trace_error": None}
    r.update(kw)
    return r


def test_quality_rules_each_counted():
    long = "Find the value of the expression described in the following careful statement"
    cases = {
        "ok": _rec(long),
        "missing_fields": _rec(long + " a", answer="", solution=""),
        "trace_errored": _rec(long + " b", trace_error="finish_reason=error"),
        "trace_empty": _rec(long + " c", thinking="  "),
        "asy_figure": _rec(long + " d [asy] draw((0,0)--(1,1)); [/asy]"),
        "image_link": _rec(long + " e <img src='x.png'>"),
        "broken_numbering": _rec("(1) " + long + "\n(2) first part\n(5) second part"),
    }
    assert quality.check(cases["ok"]) == []
    for rule, r in cases.items():
        if rule != "ok":
            assert quality.check(r) == [rule], rule
    # AIME keeps its [asy]; a record can break several rules, each is counted
    assert quality.check(_rec(long + " [asy] [/asy]", source_type="aime_1983_2024")) == []
    both = _rec("2. " + long + " ![](a.png)", thinking="")
    assert quality.check(both) == ["trace_empty", "image_link", "broken_numbering"]
    kept, st = quality.quality_filter(list(cases.values()) + [both], progress=False)
    assert [r["question"] for r in kept] == [long]
    assert st["rules"] == {"missing_fields": 1, "trace_errored": 1, "trace_empty": 2, "asy_figure": 1,
                           "image_link": 2, "broken_numbering": 2, "removed": 7, "kept": 1}


def test_broken_numbering_rule():
    assert not quality.broken_numbering("Parts:\n(a) one\n(b) two\n(c) three")
    assert not quality.broken_numbering("Show that\n1. x\n2. y\n3. z")
    assert not quality.broken_numbering("(i) first\n(ii) second")
    assert quality.broken_numbering("Parts:\n(a) one\n(c) three")
    assert quality.broken_numbering("Show that\n1. x\n1. y")
    assert not quality.broken_numbering("Statements:\n1. a\n2. b\n4. c\n8. d\nEnter the sum of the labels.")
    assert quality.broken_numbering("5. Find x if f(2) = 3.")            # leftover problem number
    assert not quality.broken_numbering("Find x if f(2) = 3 and (1) holds.")


# --------------------------------------------------------------------------------- domains
def test_keyword_classifier(shared_data):
    msc = domains.load_msc(shared_data / "curation" / "msc.json")
    assert len(msc) == 61
    clf = domains.KeywordClassifier(msc)
    assert clf.predict("A fair coin is flipped 10 times; what is the probability of exactly 4 heads?") == "60"
    assert clf.predict("In triangle ABC, the angle bisector from A meets the circumcircle at D. Find AD.") == "51"
    assert clf.predict("Find the remainder when 7^100 is divided by 13, a prime.") == "11"
    assert clf.predict("How many ways can 5 people be arranged in a row?") == "05"
    assert clf.predict("Compute the determinant of the matrix.") == "15"
    assert clf.predict("zzz qqq") == domains.DEFAULT_CODE
    q = "Let P be a polynomial with integer coefficients and roots 1 and 2."
    assert clf.predict(q) == clf.predict(q)


def test_pool_label_mapping_and_agreement():
    r_math = {"source_type": "math_train", "metadata": {"type": "Counting & Probability"}, "domain": "60"}
    r_ob = {"source_type": "olympiadbench", "metadata": {"subfield": "Number Theory"}, "domain": "05"}
    r_omni = {"source_type": "omni_math_rule", "metadata": {"domain": ["Mathematics -> Geometry -> Plane Geometry -> Angles"]}, "domain": "51"}
    r_none = {"source_type": "aime_1983_2024", "metadata": {}, "domain": "11"}
    assert domains.pool_label(r_math) == ("Counting & Probability", ("05", "60"))
    assert domains.pool_label(r_omni)[1][0] == "51"
    assert domains.pool_label(r_none) is None
    a = domains.agreement([r_math, r_ob, r_omni, r_none])["total"]
    assert a == {"labeled": 3, "strict": 1, "lenient": 2, "strict_rate": round(1 / 3, 4), "lenient_rate": round(2 / 3, 4)}
    # every code in the mapping tables is a real MSC code
    codes = {m["code"] for m in json.loads((FIX.parents[2].parent / "shared" / "data" / "curation" / "msc.json").read_text())} \
        if (FIX.parents[2].parent / "shared" / "data").exists() else None
    if codes:
        for table in (domains.MATH_TYPE, domains.OLYMPIADBENCH_SUBFIELD, domains.OMNI_DOMAIN):
            assert all(c in codes for v in table.values() for c in v)


def test_parse_code():
    assert domains.parse_code(" 11\n", {"11", "05"}) == "11"
    assert domains.parse_code("MSC 2020: 05", {"11", "05"}) == "05"
    assert domains.parse_code("no idea", {"11"}) is None


# --------------------------------------------------------------------------------- selection
def _cands(n_per_domain: dict[str, int]):
    out = []
    for d, n in n_per_domain.items():
        for i in range(n):
            out.append({"id": f"{d}-{i:03d}", "domain": d, "trace_tokens": 1000 - 7 * i})
    return out


def test_select_reproducible_by_seed():
    c = _cands({"05": 30, "11": 20, "51": 5})
    a = [r["id"] for r in select(c, 20, seed=3)]
    assert a == [r["id"] for r in select(c, 20, seed=3)]
    assert a != [r["id"] for r in select(c, 20, seed=4)]
    assert len(set(a)) == 20                                    # without replacement
    assert len(select(c, 1000, seed=0)) == 55                   # all, when size > pool
    for m in ("random", "longest", "diverse"):
        assert select(c, 10, 1, m) == select(c, 10, 1, m)


def test_select_draws_follow_rank_law():
    """One domain, 10 questions: the first draw's rank must follow p_r ∝ 2^-r (chi-square test,
    fixed seeds); the same counts must reject a uniform law."""
    c = _cands({"05": 10})
    rng_seeds = range(4000)
    ranks = Counter(int(select(c, 1, seed=s)[0]["id"].split("-")[1]) for s in rng_seeds)
    n = len(rng_seeds)
    p = rank_weights(10)
    # merge the tail so every expected count is >= 5
    k = next(i for i in range(10) if p[i:].sum() * n < 10)
    obs = [ranks[i] for i in range(k)] + [sum(ranks[i] for i in range(k, 10))]
    exp = [p[i] * n for i in range(k)] + [p[k:].sum() * n]
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    assert chi2_sf(stat, len(obs) - 1) > 0.001, (obs, exp)
    stat_u = sum((o - n / len(obs)) ** 2 / (n / len(obs)) for o in obs)
    assert chi2_sf(stat_u, len(obs) - 1) < 1e-6
    # rank 0 (longest) is drawn about half the time
    assert abs(ranks[0] / n - 0.5) < 0.03


def test_select_later_draws_use_remaining_ranks():
    """After removals, ranks are recomputed over what is left: with 2 items the second draw is forced."""
    c = _cands({"05": 3})
    firsts = Counter()
    for s in range(3000):
        ids = [r["id"] for r in select(c, 2, seed=s)]
        firsts[tuple(ids)] += 1
    # P(first=0)=4/7, then second is the longer remaining one with prob 2/3
    p = {("05-000", "05-001"): 4 / 7 * 2 / 3, ("05-000", "05-002"): 4 / 7 / 3,
         ("05-001", "05-000"): 2 / 7 * 2 / 3, ("05-001", "05-002"): 2 / 7 / 3,
         ("05-002", "05-000"): 1 / 7 * 2 / 3, ("05-002", "05-001"): 1 / 7 / 3}
    stat = sum((firsts[k] - v * 3000) ** 2 / (v * 3000) for k, v in p.items())
    assert chi2_sf(stat, 5) > 0.001, firsts


def test_select_domains_uniform():
    c = _cands({"05": 200, "11": 3})
    counts = Counter(select(c, 1, seed=s)[0]["domain"] for s in range(2000))
    assert abs(counts["11"] / 2000 - 0.5) < 0.04          # domain first, regardless of its size
    chosen = select(c, 10, seed=0)
    assert sum(r["domain"] == "11" for r in chosen) == 3   # a small domain is exhausted, then dropped


def test_ablation_selectors_and_preselected():
    c = _cands({"05": 30, "11": 20})
    longest = select(c, 5, 0, "longest")
    assert [r["trace_tokens"] for r in longest] == sorted((r["trace_tokens"] for r in c), reverse=True)[:5]
    rnd = select(c, 50, 0, "random")
    assert sorted(r["id"] for r in rnd) == sorted(r["id"] for r in c)
    div = select(c, 10, 0, "diverse")
    assert len({r["id"] for r in div}) == 10
    pre = select(c, 5, 0, "s1", preselected_ids=["11-019", "05-029"])
    assert [r["id"] for r in pre[:2]] == ["11-019", "05-029"] and len(pre) == 5 and len({r["id"] for r in pre}) == 5
    with pytest.raises(ValueError, match="pre-selected"):
        select(c, 5, 0, "s1", preselected_ids=["nope"])
    with pytest.raises(ValueError, match="unknown selector"):
        select(c, 5, 0, "best")


# --------------------------------------------------------------------------------- traces import
def test_trace_import_s1k_columns(tmp_path):
    from s1.curate.traces import add_traces, load_trace_file

    q = "What is the greatest common divisor of $1729$ and $1768$ when both numbers are written in base ten?"
    rows = [{"question": q, "thinking_trajectories": ["  step one\n"], "attempt": "13"},
            {"question": "Other question?", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    import datasets
    datasets.Dataset.from_list([rows[0]]).to_parquet(str(tmp_path / "t.parquet"))
    for f in ("t.jsonl", "t.parquet"):
        tr = load_trace_file(str(tmp_path / f))
        assert tr[question_id(q)] == {"thinking": "step one", "attempt": "13"}
    recs, _ = sources.load_sources([POOL], progress=False)
    out, counts = add_traces(recs, load_trace_file(str(tmp_path / "t.jsonl")), None, {}, 0, None, progress=False)
    assert counts == {"imported": 1, "teacher": 0, "missing": len(recs) - 1, "errored": 0}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": q, "attempt": "1"}))
    with pytest.raises(ValueError, match="row 1 lacks"):
        load_trace_file(str(tmp_path / "bad.jsonl"))


# --------------------------------------------------------------------------------- pipeline
def _stage_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "stages").glob("*.jsonl"))}


def test_pipeline_end_to_end_with_fake_models(tmp_path, shared_data):
    recs, _ = sources.load_sources([POOL], progress=False)
    # the student answers two questions correctly: they must be dropped by the difficulty stage
    knows = {r["question"]: r["answer"] for r in recs if r["answer"] in ("84", "738")}
    llms = {"teacher": FakeLLM(), "student": FakeLLM(knows=knows), "dm": FakeLLM()}
    pipe = run_pipeline(tmp_path / "run", llms, domain_model="dm", size=6)
    st = {s: pipe.stats(s) for s in STAGES}
    assert st["sources"]["count"] == 18 and st["decontam"]["count"] == 16
    assert st["quality"]["stats"]["rules"]["broken_numbering"] == 2
    diff = st["difficulty"]["stats"]
    assert list(diff["correct_per_student"].values()) == [2]
    sel = pipe.load("select")
    assert len(sel) == 6 and not any(r["answer"] in ("84", "738") for r in sel)
    assert all(r["domain_method"] == "model" for r in pipe.load("domains"))
    # the teacher saw the budget-forcing params and per-question seeds
    assert len(llms["teacher"].prompts) == 16
    # output: s1K schema, readable by the trainer's loader as is
    from s1.train.data import extract_fields, load_rows

    for src in ("dataset", "s1k.parquet", "s1k.jsonl"):
        rows = load_rows(str(tmp_path / "run" / src))
        assert len(rows) == 6
        for i, row in enumerate(rows):
            assert set(("question", "solution", "cot_type", "source_type", "metadata", "cot",
                        "thinking_trajectories", "attempt")) <= set(row)
            assert isinstance(row["thinking_trajectories"], list) and len(row["thinking_trajectories"]) == 1
            q, t, a = extract_fields(row, i)
            assert t.startswith("step0") and "boxed" in a
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Counts per stage and source" in report and "Domain histogram" in report and "Trace length histogram" in report
    assert (tmp_path / "run" / "report.png").stat().st_size > 10_000
    # a rerun skips every stage (no model call) and changes nothing
    before = _stage_bytes(tmp_path / "run")
    calls = {k: v.calls for k, v in llms.items()}
    run_pipeline(tmp_path / "run", llms, domain_model="dm", size=6)
    assert {k: v.calls for k, v in llms.items()} == calls and _stage_bytes(tmp_path / "run") == before
    # changing only the selection size reruns select + output, nothing upstream
    pipe2 = run_pipeline(tmp_path / "run", llms, domain_model="dm", size=4)
    assert {k: v.calls for k, v in llms.items()} == calls and len(pipe2.load("select")) == 4


@pytest.mark.parametrize("stage,fail_after", [("traces", 2), ("difficulty", 3), ("domains", 1)])
def test_interrupted_stage_restarted_equals_uninterrupted(tmp_path, shared_data, stage, fail_after):
    recs, _ = sources.load_sources([POOL], progress=False)
    knows = {r["question"]: r["answer"] for r in recs[:5]}
    ref = run_pipeline(tmp_path / "ref", {"teacher": FakeLLM(), "student": FakeLLM(knows=knows), "dm": FakeLLM()},
                       domain_model="dm")
    role = {"traces": "teacher", "difficulty": "student", "domains": "dm"}[stage]
    llms = {"teacher": FakeLLM(), "student": FakeLLM(knows=knows), "dm": FakeLLM()}
    llms[role].fail_after = fail_after
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tmp_path / "run", llms, domain_model="dm")
    cache = next((tmp_path / "run" / "cache").glob(f"{ {'teacher': 'traces', 'student': 'student', 'dm': 'domains'}[role]}_*.jsonl"))
    done = len(cache.read_text().splitlines())
    assert done == 3 * fail_after          # batch_size 3: finished batches are on disk
    # simulate a kill in the middle of writing the next batch: a partial JSON line at the end
    with open(cache, "a") as f:
        f.write('{"id": "deadbeef", "thin')
    fresh = FakeLLM(knows=knows) if role == "student" else FakeLLM()
    llms[role] = fresh
    run_pipeline(tmp_path / "run", llms, domain_model="dm")
    n_in = ref.stats(STAGES[STAGES.index(stage) - 1])["count"]    # questions entering the stage
    assert len(fresh.prompts) == n_in - done                        # only the unfinished ones rerun
    assert _stage_bytes(tmp_path / "run") == _stage_bytes(tmp_path / "ref")
    assert (tmp_path / "run" / "s1k.jsonl").read_bytes() == (tmp_path / "ref" / "s1k.jsonl").read_bytes()
    report = {d: (tmp_path / d / "report.md").read_text().replace(f"({d})", "") for d in ("run", "ref")}
    assert report["run"] == report["ref"]


def test_cli_whole_and_single_stages(tmp_path, shared_data, capsys):
    from bench.curate import build_trace_file
    from s1.curate.cli import main

    traces = tmp_path / "traces.jsonl"
    build_trace_file([POOL], traces)
    out = tmp_path / "run"
    base = ["--out", str(out), "--no-progress"]
    assert main(["sources", *base, "--pool", POOL]) == 0
    assert main(["traces", *base]) == 1                       # decontam has not run yet
    assert "run `s1 curate decontam" in capsys.readouterr().err
    assert main(["decontam", *base, "--eval", EVAL]) == 0
    assert main(["traces", *base]) == 1                       # neither teacher nor traces file
    assert main(["traces", *base, "--traces", str(traces)]) == 0
    assert main([*base, "--size", "5", "--seed", "1"]) == 0   # the rest; settings come from config.json
    assert len((out / "s1k.jsonl").read_text().splitlines()) == 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pool"] == [POOL] and cfg["size"] == 5
    capsys.readouterr()
    assert main([*base]) == 0                                   # everything up to date
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"seconds": {}}
    assert main(["select", *base, "--selector", "longest"]) == 0
    assert main(["bogus", *base]) == 2


def test_bench_smoke(tmp_path, shared_data):
    from bench.curate import main

    assert main(["--smoke", "--out", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["counts"]["sources"] == 18 and r["counts"]["select"] == 5 and r["passed"]
