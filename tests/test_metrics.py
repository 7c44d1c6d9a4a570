"""Test-time-scaling metrics (evaluation/metrics.py) against hand-computed values."""

import pytest

from evaluation import metrics


def rec(qid, point, correct, think, max_t=None, min_t=0, sample=0, extracted="1", reference="1", kind="math"):
    return {"qid": qid, "point": point, "method": "m", "sample": sample, "correct": correct,
            "thinking_tokens": think, "max_thinking_tokens": max_t, "min_thinking_tokens": min_t,
            "extracted": extracted, "reference": reference, "kind": kind}


def test_control_hand_table():
    rs = [
        rec("a", "p", True, 100, max_t=100),   # exactly at the cap: controlled
        rec("b", "p", True, 101, max_t=100),   # over: not
        rec("c", "p", False, 50, max_t=100, min_t=60),  # under the min: not
        rec("d", "p", False, 70, max_t=100, min_t=60),  # inside: controlled
        rec("e", "q", True, 5000),              # no limit: not counted
    ]
    assert metrics.control(rs) == pytest.approx(2 / 4)
    assert metrics.control([rec("e", "q", True, 5000)]) is None


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
    # s1-32B AIME24 curve (s1-reference §4); the paper reports Scaling 15, Performance 56.7.
    curve = [(500, 0), (1000, 13.3), (2000, 30.0), (3933, 43.3), (5301, 50.0), (6657, 53.3), (7320, 56.7)]
    assert round(metrics.scaling(curve)) == 15
    assert metrics.performance(curve) == 56.7
    # Against raw token counts (not log2) the value would be ~0.01, far from 15.
    raw = sum((fb - fa) / (cb - ca) for i, (ca, fa) in enumerate(curve) for cb, fb in curve[i + 1:]) / 21
    assert raw < 1


def test_point_stats_hand_table():
    rs = [rec("a", "p", True, 100, max_t=128), rec("b", "p", False, 128, max_t=128),
          rec("c", "p", True, 60, max_t=128, extracted=None), rec("d", "p", False, 200, max_t=128)]
    st = metrics.point_stats(rs)
    assert st["accuracy"] == pytest.approx(50.0)
    assert st["mean_thinking_tokens"] == pytest.approx((100 + 128 + 60 + 200) / 4)
    assert st["control"] == pytest.approx(3 / 4)
    assert st["answered"] == pytest.approx(3 / 4)
    assert st["questions"] == 4


def test_majority_vote_groups_equivalent_answers_and_breaks_ties_first_seen():
    assert metrics.majority_vote(["1/2", "3", r"\frac{1}{2}", "3", "0.5"]) == "1/2"  # 3 votes vs 2
    assert metrics.majority_vote(["7", "5", "5", "7"]) == "7"  # tie 2-2: first seen wins
    assert metrics.majority_vote(["5", "7", "7", "5"]) == "5"
    assert metrics.majority_vote([None, None, "4"]) == "4"  # unanswered samples do not vote
    assert metrics.majority_vote([None, None]) is None
    assert metrics.majority_vote(["025", "25", "24"], "integer") == "025"


def test_majority_curve_hand_computed():
    # Two questions, 4 samples each. q1 (ref 3): answers 3, 4, 4, 3 ; q2 (ref 10): 9, 10, 10, 10
    rs = []
    for s, (a, t) in enumerate([("3", 10), ("4", 20), ("4", 30), ("3", 40)]):
        rs.append(rec("q1", "p", a == "3", t, sample=s, extracted=a, reference="3"))
    for s, (a, t) in enumerate([("9", 1), ("10", 2), ("10", 3), ("10", 4)]):
        rs.append(rec("q2", "p", a == "10", t, sample=s, extracted=a, reference="10"))
    curve = metrics.majority_curve(rs)
    assert [c["k"] for c in curve] == [1, 2, 4]
    # k=1: q1 "3" right, q2 "9" wrong -> 50%; compute (10 + 1)/2
    # k=2: q1 tie 3/4 -> "3" (first seen) right; q2 tie 9/10 -> "9" wrong -> 50%; compute (30 + 3)/2
    # k=4: q1 tie 2-2 -> "3" right; q2 "10" x3 right -> 100%; compute (100 + 10)/2
    assert [c["accuracy"] for c in curve] == [50.0, 50.0, 100.0]
    assert [c["compute"] for c in curve] == [5.5, 16.5, 55.0]
    with pytest.raises(ValueError, match="needs 5 samples"):
        metrics.majority_curve(rs, ks=[5])
