"""The curation pipeline (s1/curate/pipeline.py): every stage end to end on small fixtures
(tests/fixtures/curate), reruns and resumability; the stages themselves are tested in
tests/curate/test_<stage module>.py.

Model-driven stages run first with FakeLLM, a deterministic stand-in with the engine's
generate() interface, then through the real engine (infer.LLM): a tiny random-weight Qwen2
checkpoint with the real Qwen2.5 tokenizer acts as teacher, student and domain model. Traces are
nonsense, but every model stage runs for real: budget forcing is passed through, per-question
seeds make a killed and restarted stage give exactly the uninterrupted output.
"""
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from s1.common.jsonl import read_jsonl
from s1.curate import sources
from s1.curate.pipeline import STAGES, Config, Pipeline
from tests._tiny import make_tiny_checkpoint

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


# --------------------------------------------------------------------------------- the real engine
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.conftest import require_shared_data

    tok = require_shared_data() / "qwen2.5-tokenizer"
    d = tmp_path_factory.mktemp("curate_models")
    # 8192 positions: the MSC classification prompt is ~4.5K tokens
    return (make_tiny_checkpoint(d / "teacher", tok, 0, max_positions=8192),
            make_tiny_checkpoint(d / "student", tok, 1, max_positions=8192))


class KillAfter:
    """Wraps an LLM; raises after n generate() calls (a run killed mid-stage)."""

    def __init__(self, llm, n):
        self.llm, self.n, self.calls = llm, n, 0

    def generate(self, *a, **kw):
        if self.calls >= self.n:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return self.llm.generate(*a, **kw)


def _cfg(out, teacher, student, **kw):
    return Config(out=str(out), pool=[str(FIX / "pool")], eval_sets=[str(FIX / "eval")], teacher=teacher,
                  students=[student], size=5, seed=0, batch_size=4, progress=False, max_questions=8,
                  teacher_params={"max_thinking_tokens": 8, "max_answer_tokens": 6, "temperature": 0.8},
                  student_params={"max_thinking_tokens": 4, "max_answer_tokens": 4}, **kw)


def test_real_engine_pipeline_and_restart(tiny_models, shared_data, tmp_path):
    from s1.curate.pipeline import default_llm_factory

    teacher, student = tiny_models
    cache = {}

    def factory(path, device):   # load each checkpoint once per test
        if path not in cache:
            cache[path] = default_llm_factory(path, device)
        return cache[path]

    ref = Pipeline(_cfg(tmp_path / "ref", teacher, student), factory, log=lambda m: None)
    ref.run()
    tr = read_jsonl(next((tmp_path / "ref" / "cache").glob("traces_*.jsonl")))
    assert ref.stats("decontam")["count"] == 16 and len(tr) == 8     # model stages on a seeded subset of 8
    assert all(r["error"] is None and 0 < r["num_thinking_tokens"] <= 8 for r in tr)   # budget cap honoured
    recs = ref.load("difficulty")
    assert all(r["trace_tokens"] > 0 for r in recs)
    assert ref.stats("difficulty")["stats"]["students"] == [next(iter(ref.stats("difficulty")["stats"]["correct_per_student"]))]
    n = ref.stats("difficulty")["count"]
    assert len(ref.load("select")) == min(5, n)
    rows = [json.loads(l) for l in (tmp_path / "ref" / "s1k.jsonl").read_text().splitlines()]
    assert len(rows) == min(5, n) and all(len(r["thinking_trajectories"]) == 1 for r in rows)

    # kill the teacher after one batch of 4, restart: identical traces (sampled at T=0.8: the
    # engine's per-request seeds make each output independent of its batch)
    run = Pipeline(_cfg(tmp_path / "run", teacher, student),
                   lambda p, d: KillAfter(factory(p, d), 1) if p == teacher else factory(p, d), log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert len(read_jsonl(next((tmp_path / "run" / "cache").glob("traces_*.jsonl")))) == 4
    Pipeline(_cfg(tmp_path / "run", teacher, student), factory, log=lambda m: None).run(STAGES[:3])
    for s in STAGES[:3]:
        a = (tmp_path / "run" / "stages" / ref.records_path(s).name).read_bytes()
        assert a == ref.records_path(s).read_bytes(), s


def test_real_engine_domain_model(tiny_models, shared_data):
    """The MSC classification prompt through the engine; a random model's unparseable answers
    fall back to the keyword classifier and are counted as such."""
    from s1.curate.domains import classify, load_msc
    from s1.curate.pipeline import default_llm_factory

    msc = load_msc(shared_data / "curation" / "msc.json")
    recs = [{"id": f"q{i}", "question": q, "source_type": "x", "metadata": {}} for i, q in
            enumerate(["A fair coin is flipped 10 times; what is the probability of 4 heads?",
                       "In triangle ABC the angle at A is 90 degrees; find the circumcircle radius."])]
    out, st = classify(recs, msc, default_llm_factory(tiny_models[1], "cpu"), None, progress=False)
    assert sum(st["methods"].values()) == 2 and set(st["methods"]) <= {"model", "keyword_fallback"}
    assert all(r["domain"] in {m["code"] for m in msc} for r in out)


def test_s1_recipe_model_free(tmp_path, shared_data):
    """--recipe s1 on the fixture pool with the pool's solutions as traces: s1's quality rules,
    the teacher graded by the offline rules (no judge), AIME rows preselected, two-phase sampler."""
    cfg = Config(out=str(tmp_path / "run"), pool=[POOL], eval_sets=[EVAL], traces=["pool-solutions"], size=5,
                 recipe="s1", progress=False)
    pipe = Pipeline(cfg, log=lambda m: None)
    pipe.run(STAGES[:-1])
    q = pipe.stats("quality")["stats"]
    assert q["recipe"] == "s1" and set(q["rules"]) >= {"missing_feature", "asy", "p_numbered", "bold_digits"}
    # the AIME [asy] question is kept (s1's exemption)
    assert any("[asy]" in r["question"] and "aime" in r["source_type"] for r in pipe.load("quality"))
    d = pipe.stats("difficulty")["stats"]
    assert d["skipped"] and d["teacher_graded_by"].startswith("rules")
    sel = pipe.stats("select")["stats"]
    aime = [r for r in pipe.load("domains") if "aime" in r["source_type"]]
    assert sel["preselected"] == sel["preselected_kinds"]["aime"] == len(aime) == 3   # 1983-2022 rows
    chosen = pipe.load("select")
    assert len(chosen) == 5 and {r["id"] for r in chosen[:3]} == {r["id"] for r in aime}
    assert sel["benchmark_histogram"] == dict(sorted(Counter(r["domain"] for r in aime).items()))
    # the project recipe on the same run folder: its own (different) quality rules run again
    cfg2 = Config(**{**cfg.__dict__, "recipe": "project"})
    p2 = Pipeline(cfg2, log=lambda m: None)
    assert p2.is_done("traces") and not p2.is_done("quality")
