"""Test-time-scaling metrics (s1/evaluation/metrics.py) against hand-computed values."""

import pytest

from s1.evaluation import grading, metrics


def rec(qid, point, correct, think, max_t=None, min_t=0, sample=0, extracted="1", reference="1", kind="math"):
    return {"qid": qid, "point": point, "method": "m", "sample": sample, "correct": correct,
            "thinking_tokens": think, "max_thinking_tokens": max_t, "min_thinking_tokens": min_t,
            "extracted": extracted, "reference": reference, "kind": kind}


def test_control_runs_hand_table():
    """Per-run share (the second, stricter metric): each run against its setting's limits."""
    rs = [rec("a", "p", True, 100), rec("b", "p", True, 101), rec("c", "p", False, 60), rec("d", "p", False, 70)]
    assert metrics.control_runs(rs, None, 100) == pytest.approx(3 / 4)   # 100 is at the cap: inside
    assert metrics.control_runs(rs, 65, 100) == pytest.approx(2 / 4)     # 60 is under the min
    assert metrics.control_runs(rs) is None                              # no limit: nothing to obey
    never_fit = dict(rec("e", "p", True, 100), rs_accepted=False)        # rejection sampling gave up
    assert metrics.control_runs(rs[:1] + [never_fit], None, 100) == 0.5


def test_control_is_per_setting_inclusive():
    """Paper eq. 1: the share of settings whose compute lies in [a_min, a_max], inclusive."""
    assert metrics.control([(100, None, 100), (101, None, 100), (50, 60, 100), (60, 60, 100)]) == 0.5
    assert metrics.control([(5000, None, None)]) is None          # no setting has a limit
    assert metrics.control([(10, None, 20), (5000, None, None)]) == 1.0


def test_control_reproduces_the_papers_table_3():
    """Control of s1-32B on AIME24 (paper Table 3: token-conditional 40%, step-conditional 60%,
    class-conditional 50%, each with budget forcing 100%) from the mean thinking tokens per setting
    in the paper's appendix tables (arXiv v2 Tables 11-13 / v3 Tables 12-14)."""
    # Token-conditional: "Think for up to N tokens", N = 1024 .. 16384 is each setting's a_max.
    limits = [1024, 2048, 4096, 8192, 16384]
    without = [7939, 7158, 8263, 7108, 7500]
    forced = [1024, 2048, 4031, 5664, 6330]
    assert metrics.control((t, None, a) for t, a in zip(without, limits)) == pytest.approx(2 / 5)
    assert metrics.control((t, None, a) for t, a in zip(forced, limits)) == 1.0
    # Step-conditional: 16 .. 256 steps at the paper's 100 tokens per step -> a_max 1600 .. 25600.
    steps = [16, 32, 64, 128, 256]
    limits = [100 * s for s in steps]
    assert limits == [1600, 3200, 6400, 12800, 25600]
    without = [7252, 6277, 5396, 5552, 7551]
    forced = [1517, 2963, 4636, 5409, 7551]
    assert metrics.control((t, None, a) for t, a in zip(without, limits)) == pytest.approx(3 / 5)
    assert metrics.control((t, None, a) for t, a in zip(forced, limits)) == 1.0
    # Class-conditional: the default run's 6109 thinking tokens is the bound; the short prompt
    # should stay below it (a_max), the long one above it (a_min). Short 8033, long 9651.
    assert metrics.control([(8033, None, 6109), (9651, 6109, None)]) == pytest.approx(1 / 2)


def test_scaling_hand_computed():
    # compute 100 -> 25%, 200 -> 50%, 800 -> 50%:
    # pairs: (100,200): 25/1 = 25; (100,800): 25/3; (200,800): 0/2 = 0 -> mean = (25 + 25/3 + 0)/3
    curve = [(200, 50.0), (100, 25.0), (800, 50.0)]
    assert metrics.scaling(curve) == pytest.approx((25 + 25 / 3 + 0) / 3)
    assert metrics.performance(curve) == 50.0
    assert metrics.scaling([(100, 10.0)]) is None
    assert metrics.scaling([(100, 10.0), (100, 20.0)]) is None  # equal compute: no slope
    with pytest.raises(ValueError, match="positive"):
        metrics.scaling([(0, 10.0), (100, 20.0)])


def test_scaling_reproduces_paper_aime24_budget_forcing():
    # s1-32B AIME24 curve (s1 paper, Figure 1 and Table 3); the paper reports Scaling 15, Performance 56.7.
    curve = [(500, 0), (1000, 13.3), (2000, 30.0), (3933, 43.3), (5301, 50.0), (6657, 53.3), (7320, 56.7)]
    assert round(metrics.scaling(curve)) == 15
    assert metrics.performance(curve) == 56.7
    # Against raw token counts (not log2) the value would be ~0.01, far from 15.
    raw = sum((fb - fa) / (cb - ca) for i, (ca, fa) in enumerate(curve) for cb, fb in curve[i + 1:]) / 21
    assert raw < 1


def test_point_stats_hand_table():
    rs = [rec("a", "p", True, 100, max_t=128), rec("b", "p", False, 128, max_t=128),
          rec("c", "p", True, 60, max_t=128, extracted=None), rec("d", "p", False, 200, max_t=128)]
    st = metrics.point_stats(rs, None, 128)
    assert st["accuracy"] == pytest.approx(50.0)
    assert st["mean_thinking_tokens"] == st["compute"] == pytest.approx((100 + 128 + 60 + 200) / 4)
    assert st["control"] == 1.0                    # the setting's mean 122 is within 128
    assert st["control_runs"] == pytest.approx(3 / 4)   # one run (200) is not
    assert metrics.point_stats(rs, None, 100)["control"] == 0.0
    assert st["answered"] == pytest.approx(3 / 4)
    assert st["questions"] == 4


def test_majority_vote_groups_equivalent_answers_and_breaks_ties_first_seen():
    assert grading.majority_vote(["1/2", "3", r"\frac{1}{2}", "3", "0.5"]) == "1/2"  # 3 votes vs 2
    assert grading.majority_vote(["7", "5", "5", "7"]) == "7"  # tie 2-2: first seen wins
    assert grading.majority_vote(["5", "7", "7", "5"]) == "5"
    assert grading.majority_vote([None, None, "4"]) == "4"  # unanswered samples do not vote
    assert grading.majority_vote([None, None]) is None
    assert grading.majority_vote(["025", "25", "24"], "integer") == "025"


def test_majority_curve_hand_computed():
    # Two questions, 4 samples each. q1 (ref 3): answers 3, 4, 4, 3 ; q2 (ref 10): 9, 10, 10, 10
    rs = []
    for s, (a, t) in enumerate([("3", 10), ("4", 20), ("4", 30), ("3", 40)]):
        rs.append(rec("q1", "p", a == "3", t, sample=s, extracted=a, reference="3"))
    for s, (a, t) in enumerate([("9", 1), ("10", 2), ("10", 3), ("10", 4)]):
        rs.append(rec("q2", "p", a == "10", t, sample=s, extracted=a, reference="10"))
    with pytest.raises(ValueError, match="group_votes"):     # metrics grade nothing: groups come first
        metrics.majority_curve(rs)
    curve = metrics.majority_curve(grading.group_votes(rs))
    assert [c["k"] for c in curve] == [1, 2, 4]
    # k=1: q1 "3" right, q2 "9" wrong -> 50%; compute (10 + 1)/2
    # k=2: q1 tie 3/4 -> "3" (first seen) right; q2 tie 9/10 -> "9" wrong -> 50%; compute (30 + 3)/2
    # k=4: q1 tie 2-2 -> "3" right; q2 "10" x3 right -> 100%; compute (100 + 10)/2
    assert [c["accuracy"] for c in curve] == [50.0, 50.0, 100.0]
    assert [c["compute"] for c in curve] == [5.5, 16.5, 55.0]
    with pytest.raises(ValueError, match="needs 5 samples"):
        metrics.majority_curve(rs, ks=[5])
