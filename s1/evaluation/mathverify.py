"""Hugging Face Math-Verify as an optional grading backend (`pip install -e .[mathverify]`).

Math-Verify is the grader open-r1 and lighteval use: it extracts the last LaTeX / plain
expression of a text and compares with sympy. Here:
- `mv_grade(text, reference, kind)`: the answer part of a generation (after the last
  `<|im_start|>answer`, special tokens dropped) parsed with Math-Verify's default extraction
  (LaTeX, then plain expressions), the reference parsed as `\\boxed{reference}`; `verify(gold,
  pred)`. "choice" answers are letters, which Math-Verify's default configs do not extract: they
  go to our rule grader (s1/evaluation/grader.py).
- `available()`: whether the package imports; callers (tests, the bench script, `--grading
  mathverify`) skip or refuse with `MISSING` when it does not.
Math-Verify's own timeouts use SIGALRM, so call it from the main thread.
"""
from __future__ import annotations

MISSING = "Math-Verify is not installed: pip install -e '.[mathverify]' (or pip install math-verify)"


def available() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def _require():
    try:
        import math_verify
    except ImportError as e:
        raise ImportError(MISSING) from e
    return math_verify


def mv_parse_gold(reference: str):
    mv = _require()
    ref = str(reference).strip()
    return mv.parse("\\boxed{" + ref + "}" if "\\boxed" not in ref else ref)


def mv_grade(text: str | None, reference: str, kind: str = "math") -> bool:
    """Math-Verify's verdict on a generation (or an extracted answer) against a reference."""
    from s1.evaluation.grader import answer_section, extract_answer, grade

    if text is None:
        return False
    if kind == "choice":
        return grade(extract_answer(text, kind), reference, kind)
    mv = _require()
    section = answer_section(str(text))
    try:
        pred = mv.parse(section)
        return bool(pred) and bool(mv.verify(mv_parse_gold(reference), pred))
    except Exception:   # Math-Verify raises on inputs its sympy conversion cannot handle
        return False
