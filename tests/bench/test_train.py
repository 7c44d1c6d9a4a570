"""bench/train.py runs end to end in its CPU --smoke mode (ours + transformers rows)."""
import json

import pytest


def test_bench_train_smoke(tmp_path):
    pytest.importorskip("transformers")
    from bench.train import main
    out = tmp_path / "train.json"
    assert main(["--smoke", "--seq-lens", "32", "--grad-ckpt", "on", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())                     # a smoke run writes where --out says
    assert rec["smoke"] and {r["impl"] for r in rec["rows"]} == {"ours", "hf"}
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["loss"] > 0 for r in rec["rows"])
    # Same random batch, same init scale: both start near ln(vocab) = ln(1024) ~ 6.93.
    assert all(abs(r["loss"] - 6.93) < 0.5 for r in rec["rows"])
