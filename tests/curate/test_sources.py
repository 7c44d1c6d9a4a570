"""Pool sources (s1/curate/sources.py): the fixture pool, malformed rows reported with source
and line, generic JSONL and datasets folders."""
import json
from pathlib import Path

import pytest

from s1.curate import sources
from s1.curate.text import question_id

FIX = Path(__file__).parents[1] / "fixtures" / "curate"
POOL = str(FIX / "pool")


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
