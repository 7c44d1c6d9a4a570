"""Quality filters (s1/curate/quality.py): every rule counted."""


from s1.curate import quality
from s1.curate.text import question_id


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
