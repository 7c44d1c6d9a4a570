"""Trace import (s1/curate/traces.py): s1K columns."""
import json
from pathlib import Path

import pytest

from s1.curate import sources
from s1.curate.text import question_id

FIX = Path(__file__).parents[1] / "fixtures" / "curate"
POOL = str(FIX / "pool")


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
