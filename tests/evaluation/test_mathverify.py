"""Math-Verify as an optional grading backend (s1/evaluation/mathverify.py): skips cleanly when
the extra is not installed; with it, its verdicts on clear cases and `--grading mathverify`."""
import json

import pytest

from s1.evaluation import grading, mathverify


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(mathverify, "available", lambda: False)
    with pytest.raises(ImportError, match="pip install"):
        grading.grade_records([{"reference": "1", "kind": "math", "text": "1"}], "mathverify")


mv = pytest.mark.skipif(not mathverify.available(), reason="math-verify not installed (pip install -e .[mathverify])")


@mv
@pytest.mark.parametrize("text,ref,ok", [
    ("<|im_start|>answer\nFinal Answer: $\\boxed{\\frac{1}{2}}$", "0.5", True),
    ("<|im_start|>answer\nAnswer: $\\boxed{(1,2)}$", "(1,2)", True),
    ("<|im_start|>answer\nAnswer: $\\boxed{3}$", "4", False),
    ("\\boxed{3} <|im_start|>answer\nAnswer: $\\boxed{4}$", "3", False),     # the answer part only
    ("Answer: B", "B", True),                                                  # letters: the rule grader
    (None, "1", False),
])
def test_mathverify_verdicts(text, ref, ok):
    kind = "choice" if ref == "B" else "math"
    assert mathverify.mv_grade(text, ref, kind) is ok


@mv
def test_grade_records_with_mathverify():
    recs = [{"reference": "\\frac{1}{2}", "kind": "math", "text": "<|im_start|>answer\nAnswer: $\\boxed{0.5}$"},
            {"reference": "7", "kind": "integer", "text": "<|im_start|>answer\nAnswer: $\\boxed{8}$"}]
    grading.grade_records(recs, "mathverify")
    assert [r["mathverify"]["correct"] for r in recs] == [True, False]
    ag = grading.mathverify_agreement(recs, "t")
    assert (ag["records"], ag["agree"]) == (2, 2)
    json.dumps(recs)
