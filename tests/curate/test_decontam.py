"""Decontamination (s1/curate/decontam.py): the fixture, and all of MATH-500 found inside the full
MATH test split (shared data)."""
from pathlib import Path

from s1.curate import decontam, sources
from s1.curate.text import question_id

FIX = Path(__file__).parents[1] / "fixtures" / "curate"
POOL = str(FIX / "pool")
EVAL = str(FIX / "eval")


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
