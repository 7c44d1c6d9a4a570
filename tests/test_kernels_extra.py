"""More kernel tests: the padded-batch attention form forward and backward, bench.kernels' CPU
smoke run end to end (bandwidth probe, % of bandwidth, cross-entropy ratios), and common.env's
dirty-tree record.

Helpers (tolerances, NaN-poisoned torch.empty, worst-element messages) come from test_kernels.py
so both files judge the kernels the same way.
"""
import json
import os
import pathlib
import subprocess
import sys
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import

import pytest  # noqa: E402

triton = pytest.importorskip("triton")

from test_kernels import DEVICE, DTYPES, assert_close, cu, leaf, leaf64, poisoned_allocations  # noqa: E402

from s1.kernels import flash_attn  # noqa: E402
from s1.kernels import reference as ref  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
interp = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                            reason="no CUDA and TRITON_INTERPRET was set to something other than 1")


# ------------------------------------------------------------------------------------ attention_padded
def _set_tiles(monkeypatch, tiles):
    if tiles and os.environ.get("TRITON_INTERPRET") == "1":
        tiles = dict(tiles)
        monkeypatch.setattr(flash_attn, "INTERPRET_KEYS_AS_ROWS", tiles.pop("keys_as_rows", True))
        monkeypatch.setattr(flash_attn, "INTERPRET_TILES", tiles)


def _padded_inputs(seed, B, Sq, Sk, Hq, Hk, D, dtype, sdpa_layout=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Sq, Hq, D, generator=gen)
    k = torch.randn(B, Sk, Hk, D, generator=gen)
    v = torch.randn(B, Sk, Hk, D, generator=gen)
    do = torch.randn(B, Sq, Hq, D, generator=gen).to(device=DEVICE, dtype=dtype)
    if sdpa_layout:  # [B, S, H, D] views of [B, H, S, D] storage: non-contiguous token strides
        bases = [leaf(t.transpose(1, 2).clone(memory_format=torch.contiguous_format), dtype) for t in (q, k, v)]
        q, k, v = (t.transpose(1, 2) for t in bases)
        return q, k, v, do, bases
    q, k, v = leaf(q, dtype), leaf(k, dtype), leaf(v, dtype)
    return q, k, v, do, [q, k, v]


def _check_padded(tag, dtype, out, grads_got, want, grads_want, Hq, Hk):
    assert out.dtype == dtype
    assert_close(out, want, dtype, f"{tag} out")
    g = (Hq // Hk) ** 0.5  # dk/dv sum over the group's query heads (as test_kernels.attention_case)
    for name, a, b, s in zip(("dq", "dk", "dv"), grads_got, grads_want, (1.0, 2 * g, 2 * g)):
        assert_close(a, b, dtype, f"{tag} {name}", scale=s)


@interp
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [
    # (name, B, Sq, Sk, Hq, Hk, D, causal, interpreter tiles)
    ("prefix_gqa6_hd64", 2, 19, 37, 6, 1, 64, True,
     {"fwd": (16, 16), "dkdv": (16, 16), "dq": (16, 16)}),
    ("square_gqa6_hd64_qrows", 3, 29, 29, 6, 1, 64, True,
     {"fwd": (16, 32), "dkdv": (32, 16), "dq": (16, 16), "keys_as_rows": False}),
    ("noncausal_gqa6_hd64", 2, 13, 21, 6, 1, 64, False, None),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_attention_padded_fwd_bwd(case, dtype, monkeypatch):
    name, B, Sq, Sk, Hq, Hk, D, causal, tiles = case
    _set_tiles(monkeypatch, tiles)
    q, k, v, do, _ = _padded_inputs(zlib.crc32(name.encode()), B, Sq, Sk, Hq, Hk, D, dtype)
    with poisoned_allocations():  # out, lse, delta, dq, dk, dv all start as NaN
        out = flash_attn.attention_padded(q, k, v, causal=causal)
        got = torch.autograd.grad(out, (q, k, v), do)
    assert out.shape == (B, Sq, Hq, D)
    q64, k64, v64 = leaf64(q), leaf64(k), leaf64(v)
    want = ref.attention(q64.reshape(B * Sq, Hq, D), k64.reshape(B * Sk, Hk, D), v64.reshape(B * Sk, Hk, D),
                         cu([Sq] * B), cu([Sk] * B), Sq, Sk, D ** -0.5, causal).view(B, Sq, Hq, D)
    rgrads = torch.autograd.grad(want, (q64, k64, v64), do.double())
    _check_padded(f"attention_padded {name} B={B} Sq={Sq} Sk={Sk} Hq={Hq} Hk={Hk} D={D} causal={causal}",
                  dtype, out, got, want, rgrads, Hq, Hk)


def _dense_reference(q, k, v, scale, causal):
    """[B, S, H, D] attention from scratch (independent of s1/kernels/reference.py): GQA by
    repeat_interleave, bottom-right causal mask; rows that see no key give 0 (FlashAttention)."""
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hk, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hk, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    if causal:
        vis = torch.arange(Sk)[None, :] <= torch.arange(Sq)[:, None] + (Sk - Sq)
        s = s.masked_fill(~vis.to(s.device), float("-inf"))
        p = torch.where(vis.any(-1, keepdim=True).to(s.device), torch.softmax(s, -1).nan_to_num(0.0), 0.0)
    else:
        p = torch.softmax(s, -1)
    return (p @ vh).transpose(1, 2)


@interp
def test_attention_padded_strided_inputs_and_empty_rows(monkeypatch):
    # (a) q/k/v as [B, S, H, D] views of SDPA-layout [B, H, S, D] tensors (the wrapper's reshape
    # must copy, and gradients must reach the original storage); (b) Sq > Sk with causal: the
    # first Sq - Sk query rows see no key and must be exactly 0, with zero gradient.
    dtype = torch.float32
    _set_tiles(monkeypatch, {"fwd": (16, 16), "dkdv": (16, 16), "dq": (16, 16)})
    for tag, (B, Sq, Sk, Hq, Hk, D) in (("sdpa_layout", (2, 23, 31, 6, 1, 64)), ("sq_gt_sk", (2, 21, 13, 6, 1, 64))):
        q, k, v, do, leaves = _padded_inputs(zlib.crc32(tag.encode()), B, Sq, Sk, Hq, Hk, D, dtype,
                                             sdpa_layout=tag == "sdpa_layout")
        with poisoned_allocations():
            out = flash_attn.attention_padded(q, k, v, causal=True)
            got = torch.autograd.grad(out, leaves, do)
        l64 = [leaf64(t) for t in leaves]
        q64, k64, v64 = (t.transpose(1, 2) for t in l64) if tag == "sdpa_layout" else l64
        want = _dense_reference(q64, k64, v64, D ** -0.5, True)
        rgrads = torch.autograd.grad(want, l64, do.double())
        _check_padded(f"attention_padded {tag} B={B} Sq={Sq} Sk={Sk} Hq={Hq} Hk={Hk} D={D}",
                      dtype, out, got, want, rgrads, Hq, Hk)
        if tag == "sq_gt_sk":
            assert out[:, : Sq - Sk].abs().max() == 0, "rows with no visible key must be exactly 0"
            assert got[0][:, : Sq - Sk].abs().max() == 0, "dq of rows with no visible key must be 0"


# ------------------------------------------------------------------------------------ bench.kernels
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


# ------------------------------------------------------------------------------------ common.env
def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True)


def test_env_dirty_counts_untracked_code(tmp_path):
    from s1.common.env import environment, git_state
    root = tmp_path / "repo"
    (root / "s1" / "kernels").mkdir(parents=True)
    (root / "bench" / "results").mkdir(parents=True)
    (root / "s1" / "kernels" / "a.py").write_text("x = 1\n")
    (root / "bench" / "results" / "r.json").write_text("{}\n")
    (root / ".gitignore").write_text("*.pyc\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")

    commit, dirty, paths = git_state(root)
    assert commit and dirty is False and paths == []
    # not code: untracked outside the code folders, ignored files, a rewritten benchmark result
    (root / "notes.txt").write_text("scratch\n")
    (root / "s1" / "kernels" / "a.pyc").write_bytes(b"\0")
    (root / "bench" / "results" / "r.json").write_text('{"new": 1}\n')
    (root / "bench" / "results" / "new.json").write_text("{}\n")
    assert git_state(root)[1:] == (False, [])
    # new, never-committed code: dirty, and named
    (root / "s1" / "kernels" / "new_kernel.py").write_text("y = 2\n")
    (root / "s1" / "model").mkdir()
    (root / "s1" / "model" / "__init__.py").write_text('"""m"""\n')
    env = environment(root=root)
    assert env["commit"] == commit and env["dirty"] is True
    assert env["dirty_paths"] == ["?? s1/kernels/new_kernel.py", "?? s1/model/__init__.py"]
    # a tracked file that differs from HEAD (unstaged or staged) is dirty too
    os.remove(root / "s1" / "kernels" / "new_kernel.py")
    os.remove(root / "s1" / "model" / "__init__.py")
    (root / "s1" / "kernels" / "a.py").write_text("x = 3\n")
    assert git_state(root)[1:] == (True, ["M s1/kernels/a.py"])
    _git(root, "add", "s1/kernels/a.py")
    assert git_state(root)[1:] == (True, ["M s1/kernels/a.py"])
    # the path list stays short
    _git(root, "commit", "-q", "-m", "2")
    for i in range(30):
        (root / "tests" / f"t{i:02d}.py").parent.mkdir(exist_ok=True)
        (root / "tests" / f"t{i:02d}.py").write_text("")
    _, dirty, paths = git_state(root)
    assert dirty is True and len(paths) == 21 and paths[-1] == "... (+10 more)"
    # not a git repository: unknown, not clean
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == (None, None, None)
