"""Curation as s1 ran it (s1/curate/s1rules.py): quality regexes, missing features, preselection,
the two-phase domain sampler, and the grader's verdict parsing, all on fixed inputs."""
from collections import Counter

import numpy as np
import pytest

from s1.curate import s1rules as R


def rec(question="What is $1+1$?", source="math_test", solution="It is $\\boxed{2}$.", answer="2",
        thinking="think", attempt="\\boxed{2}", **kw):
    return {"id": kw.pop("id", question), "question": question, "source_type": source, "solution": solution,
            "answer": answer, "thinking": thinking, "attempt": attempt, "trace_error": None, **kw}


# ------------------------------------------------------------------------------ quality
@pytest.mark.parametrize("question,source,broken", [
    ("Find the area. [asy] draw((0,0)--(1,1)); [/asy]", "omni_math_rule", ["asy"]),
    ("Find the area. [asy] draw((0,0)--(1,1)); [/asy]", "aime_1983_2024", []),        # AIME keeps its figures
    ("Find the area. [asy] draw((0,0)--(1,1)); [/asy]", "qq8933/AIME_1983_2024", []),  # s1's own source name
    ("Find the area. [ASY] draw; [/ASY]", "omni_math_rule", []),                       # s1 matches "[asy]" exactly
    ("As shown ![Image](http://x/y.png) find x.", "math_test", ["image"]),
    ("As shown ![image](http://x/y.png) find x.", "math_test", []),                    # literal, case-sensitive
    ("p1. Find x. p2. Find y.", "olympiadbench", ["p_numbered"]),
    ("Problem p999. has a dot.", "olympiadbench", ["p_numbered"]),
    ("Step1. then", "olympiadbench", ["p_numbered"]),                                  # a substring test, as s1's
    ("p0. and p1000. and P1. are not items", "olympiadbench", []),
    ("Compute **12** apples.", "math_test", ["bold_digits"]),
    ("A **bold** word and the digit 3 later on the line", "math_test", ["bold_digits"]),
    ("A **bold** word, no digit on this line\n3 on the next", "math_test", []),        # no DOTALL
    ("**two words** 5", "math_test", []),                                              # no whitespace inside
    ("**x]y** 5", "math_test", []),                                                    # no ']' inside
    ("A plain question about 7 and 8.", "math_test", []),
    # s1's exemption is the whole rule set: an AIME question with [asy] is kept whatever else it has
    ("[asy] draw; [/asy] ![Image](a.png) p1. **3**", "aime_1983_2024", []),
    ("![Image](a.png) p1. **3**", "aime_1983_2024", ["image", "p_numbered", "bold_digits"]),
])
def test_string_rules_each_way(question, source, broken):
    assert R.string_rules(question, source) == broken


def test_p_numbered_regex_equals_s1s_substring_loop():
    import random
    rnd = random.Random(0)
    for _ in range(1000):
        s = "".join(rnd.choices("p0123456789.x", k=rnd.randrange(10)))
        assert bool(R._P_NUMBERED.search(s)) == any(f"p{i}." in s for i in range(1, 1000)), s


@pytest.mark.parametrize("changes,missing", [
    ({}, False),
    ({"solution": ""}, False),                      # the answer stands in (s1's AIME rows: solution = answer)
    ({"solution": "", "answer": ""}, True),
    ({"question": "  "}, True),
    ({"trace_error": "engine error"}, True),
    ({"thinking": ""}, True),
    ({"attempt": None}, True),
])
def test_missing_features(changes, missing):
    assert R.missing_features({**rec(), **changes}) is missing


def test_quality_filter_counts_and_keeps():
    rows = [rec(id="ok"), rec(id="nosol", solution="", answer=""), rec(id="asy", question="x [asy] y"),
            rec(id="both", question="p3. **4**", attempt="")]
    kept, st = R.quality_filter(rows, progress=False)
    assert [r["id"] for r in kept] == ["ok"]
    assert st["rules"] == {"missing_feature": 2, "asy": 1, "image": 0, "p_numbered": 1, "bold_digits": 1,
                           "removed": 3, "kept": 1}


# ------------------------------------------------------------------------------ grader
@pytest.mark.parametrize("reply,verdict", [
    ("The attempt matches.\nYes", True), ("Wrong value.\nNo", False), ("Yes", True), ("reasoning\nNo\n", False),
    ("reasoning\nYes.", None), ("reasoning\nyes", None), ("Yes, it is right", None), ("", None), (None, None),
    ("No\nthen more text", None),
])
def test_parse_verdict(reply, verdict):
    assert R.parse_verdict(reply) is verdict


def test_grading_prompts_as_s1_sent_them():
    assert R.grading_user_prompt("Q?", "my try", "full solution") == \
        "## Problem\nQ?\n\n## Attempt\nmy try\n\n## Correct answer\nfull solution"
    p = R.GRADING_SYSTEM_PROMPT
    assert p.startswith("You are an AI assistant for grading a science problem.\n")
    assert "by comparing it with the correct answer. \n" in p        # s1's trailing space
    assert p.endswith('with only "Yes" or "No" (without quotes).')   # no final newline
    assert R.STUDENT_TEMPERATURE == 0.05 and R.STUDENT_MAX_TOKENS == 32768


# ------------------------------------------------------------------------------ preselection
@pytest.mark.parametrize("source,tokens,correct,pre", [
    ("aime_1983_2024", 10, True, True), ("qq8933/AIME_1983_2024", 10, True, True),
    ("Idavidrein/gpqa", 10, True, True), ("aime_1983_2024", 9999, False, False),
    ("math_test", 5601, True, True), ("math_train", 5601, True, True), ("qfq/openaimath", 5601, True, True),
    ("math_test", 5600, True, False),                       # strictly longer than 5,600
    ("math_test", 9000, None, False),                       # no verdict is not correct
    ("omni_math_rule", 9000, True, False), ("olympiadbench", 9000, True, False),
])
def test_preselection(source, tokens, correct, pre):
    assert R.preselected(rec(source=source, trace_tokens=tokens, teacher_correct=correct)) is pre


# ------------------------------------------------------------------------------ sampler
def cand(i, domain, source="omni_math_rule", tokens=None):
    return {"id": f"{domain}-{i:04d}", "domain": domain, "source_type": source, "trace_tokens": tokens if tokens is not None else i}


def test_benchmark_histogram_weights_gpqa_by_half_aime_over_gpqa():
    rows = ([cand(i, "A", "aime_1983_2024") for i in range(4)] + [cand(i, "B", "aime_1983_2024") for i in range(2)]
            + [cand(i, "A", "Idavidrein/gpqa") for i in range(3)] + [cand(i, "C", "Idavidrein/gpqa") for i in range(4)]
            + [cand(i, "D", "Idavidrein/gpqa") for i in range(1)] + [cand(i, "E") for i in range(50)])
    # |AIME| = 6, |GPQA| = 8 -> ratio 0.375; GPQA A: int(1.125) = 1, C: int(1.5) = 1, D: int(0.375) = 0 (dropped)
    assert R.benchmark_histogram(rows) == {"A": 5, "B": 2, "C": 1}
    assert R.benchmark_histogram([cand(0, "A", "aime_1983_2024")]) == {"A": 1}      # no GPQA: AIME alone
    assert R.benchmark_histogram([cand(0, "E")]) == {}


def test_domain_probabilities_switch_at_700_by_default():
    hist = {"A": 5, "B": 2, "C": 1}
    doms = ["A", "B", "C", "E"]
    assert R.PHASE_SWITCH == 700
    assert R.domain_probabilities(699, doms, hist) == {d: 0.25 for d in doms}
    assert R.domain_probabilities(700, doms, hist) == {"A": 5 / 8, "B": 2 / 8, "C": 1 / 8}
    assert R.domain_probabilities(900, ["B", "C", "E"], hist) == {"B": 2 / 3, "C": 1 / 3}   # A exhausted
    assert R.domain_probabilities(900, ["E"], hist) == {}
    assert R.domain_probabilities(3, ["E"], hist, phase_switch=3) == {}


def test_power_law_by_length_longest_first():
    items = [{"id": i, "trace_tokens": n} for i, n in (("a", 10), ("d", 30), ("c", 20), ("b", 30))]
    assert [r["id"] for r in R.by_length(items)] == ["b", "d", "c", "a"]     # ties by id
    assert np.allclose(R.rank_weights(4), np.array([8, 4, 2, 1]) / 15)


def _pool():
    """Six domains (A and B: 900 questions, the others 400); the benchmark histogram (AIME only)
    covers A (3/4) and B (1/4)."""
    rows = []
    for d in "ABCDEF":
        rows += [cand(i, d) for i in range(900 if d in "AB" else 400)]
    rows += [cand(1000 + i, "A", "aime_1983_2024") for i in range(6)] + [cand(1000 + i, "B", "aime_1983_2024") for i in range(2)]
    return rows


def test_sampler_two_phases_seeded():
    rows = _pool()
    draws = []
    chosen = R.sample(rows, 1000, seed=7, phase_switch=200, trace=draws)
    assert len(chosen) == len({r["id"] for r in chosen}) == 1000
    assert chosen == R.sample(rows, 1000, seed=7, phase_switch=200)         # reproducible
    assert chosen != R.sample(rows, 1000, seed=8, phase_switch=200)
    phase1 = [d for n, d, _, _ in draws if n < 200]
    phase2 = [d for n, d, _, _ in draws if n >= 200]
    assert len(phase1) == 200 and len(phase2) == 800
    assert set(phase1) == set("ABCDEF") and set(phase2) == {"A", "B"}       # only benchmark domains later
    c1, c2 = Counter(phase1), Counter(phase2)
    assert all(15 <= c1[d] <= 55 for d in "ABCDEF"), c1                    # ~33 each (uniform)
    assert abs(c2["A"] / 800 - 0.75) < 0.05, c2                             # 6 : 2 AIME histogram


def test_sampler_within_domain_draws_follow_the_power_law():
    rows = [cand(i, "A", tokens=10 * i) for i in range(8)]            # A-0007 is the longest
    firsts = Counter(R.sample(rows, 1, seed=s)[0]["id"] for s in range(2000))
    assert abs(firsts["A-0007"] / 2000 - 0.5) < 0.04 and abs(firsts["A-0006"] / 2000 - 0.25) < 0.04
    assert abs(firsts["A-0005"] / 2000 - 0.125) < 0.03


def test_sampler_real_default_switches_at_700():
    rows = _pool()
    draws = []
    chosen = R.sample(rows, 1000, seed=0, trace=draws)
    assert len(chosen) == 1000
    late = {d for n, d, _, _ in draws if n >= 700}
    early = Counter(d for n, d, _, _ in draws if n < 700)
    assert late == {"A", "B"} and set(early) == set("ABCDEF")
    assert sum(early.values()) == 700


def test_sampler_preselected_stay_in_domain_lists():
    """s1 builds the domain lists from every candidate: drawing a preselected question wastes the
    draw (removes it, chooses nothing new)."""
    rows = [cand(i, "A", tokens=100 - i) for i in range(3)]       # A-0000 is the longest
    draws = []
    chosen = R.sample(rows, 3, seed=0, preselected_ids=["A-0000"], trace=draws)
    assert [r["id"] for r in chosen][0] == "A-0000" and len(chosen) == 3
    assert len(draws) == 3 and sum(not new for *_, new in draws) == 1
    # phase 2 without any benchmark domain stops instead of looping
    assert len(R.sample(rows, 3, seed=0, phase_switch=1)) == 1
    assert len(R.sample(rows, 10, seed=0)) == 3                   # the domains run dry
