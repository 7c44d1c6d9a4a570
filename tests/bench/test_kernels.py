"""bench/kernels.py: the % of bandwidth columns, and its CPU smoke run end to end (bandwidth
probe, % of bandwidth, cross-entropy ratios)."""
import json
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import

import pytest  # noqa: E402

from tests.conftest import ROOT  # noqa: E402


def test_bandwidth_percent_columns():
    from bench.kernels import add_pct_of_bandwidth
    rows = [dict(kernel="rms_norm", impl="triton (ours)", fwd_gbps=2400.0, bwd_gbps=1500.0),
            dict(kernel="swiglu", impl="torch.compile", note="skipped"),
            dict(kernel="attention", impl="triton (ours)", fwd_tflops=1.0)]
    add_pct_of_bandwidth(rows, 3000.0)
    assert rows[0]["fwd_pct_hbm"] == pytest.approx(80.0) and rows[0]["bwd_pct_hbm"] == pytest.approx(50.0)
    assert "fwd_pct_hbm" not in rows[1] and "fwd_pct_hbm" not in rows[2]
    add_pct_of_bandwidth(rows, None)  # no bandwidth measured: the column is there, empty
    assert rows[0]["fwd_pct_hbm"] is None


def test_bench_kernels_smoke_end_to_end(tmp_path):
    stem = tmp_path / "kernels_smoke"
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, "-m", "bench.kernels", "--smoke", "--out", str(stem)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"bench.kernels --smoke failed (rc {r.returncode}):\n{r.stderr[-4000:]}"
    res = json.loads(stem.with_suffix(".json").read_text())
    md = stem.with_suffix(".md").read_text()
    assert res["smoke"] is True
    for key in ("device", "commit", "dirty", "dirty_paths", "torch", "triton", "cuda", "python", "date"):
        assert key in res["env"], f"env lacks {key}"
    bw = res["bandwidth"]
    assert bw["gbps"] is not None and bw["gbps"] > 0, bw
    assert bw["per_size_gbps"] and all(g and g > 0 for g in bw["per_size_gbps"].values()), bw
    assert res["targets"] == {"elementwise_pct_hbm_min": 80.0, "ce_mem_ratio_max": 0.25, "ce_time_ratio_max": 1.2}
    rows = res["rows"]
    assert any(r["kernel"] == "bandwidth_copy" and r.get("fwd_gbps") for r in rows)
    # every measured elementwise row (ours, eager) carries % of the measured bandwidth
    for kern in ("rms_norm", "rope", "swiglu"):
        measured = [r for r in rows if r["kernel"] == kern and "fwd_gbps" in r]
        assert {r["impl"] for r in measured} >= {"triton (ours)", "eager"}, (kern, measured)
        for r in measured:
            for d in ("fwd", "bwd"):
                assert r[f"{d}_pct_hbm"] == pytest.approx(100 * r[f"{d}_gbps"] / bw["gbps"]), r
            # the smoke run's dtype: fp16 in the interpreter, bf16 on a GPU (8 bits of mantissa)
            tol = 1.6e-2 if res["dtype"] == "torch.bfloat16" else 4e-3
            assert r["max_err_vs_eager"] <= tol, (r, res["dtype"])
    fused, mat = [r for r in rows if r["kernel"] == "linear_cross_entropy"]
    assert fused["impl"].startswith("fused") and mat["impl"].startswith("F.linear")
    assert fused["time_ratio"] == pytest.approx(fused["fwd_bwd_ms"] / mat["fwd_bwd_ms"])
    assert "mem_ratio" in fused
    if fused["peak_mem_gib"] is not None and mat["peak_mem_gib"] is not None:  # GPU, or CPU with MemTracker
        assert fused["mem_ratio"] == pytest.approx(fused["peak_mem_gib"] / mat["peak_mem_gib"])
    assert fused["rel_err_loss"] < 1e-2
    for col in ("fwd_pct_hbm", "bwd_pct_hbm", "time_ratio", "mem_ratio", "peak_mem_gib", "measured bandwidth"):
        assert col in md, f"markdown lacks {col}"
