"""Triton kernels vs the PyTorch references (s1/kernels/reference.py), forward and backward: the
ops of s1/kernels/triton_ops.py (varlen and padded-batch attention, RMSNorm, RoPE, SwiGLU, fused
linear cross-entropy) and the whole model on them.

On a machine without CUDA every kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1,
set below before anything imports triton) in fp32 and fp16; on CUDA the same tests also run in
bf16. Shapes are drawn from fixed-seed RNGs and are deliberately odd: lengths that are not a
multiple of the tile, ragged packed batches with length-1 sequences, q_len < k_len, GQA 7:1,
6:1 and 1:1, head_dim 64 and 128. Every buffer the kernels allocate with torch.empty/empty_like
is poisoned with NaN, so an element a kernel forgets to write fails the comparison.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import

import random  # noqa: E402
import zlib  # noqa: E402

import pytest  # noqa: E402

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="no CUDA and TRITON_INTERPRET was set to something other than 1")

from s1 import kernels  # noqa: E402
from s1.kernels import flash_attn  # noqa: E402
from s1.kernels import reference as ref  # noqa: E402
from s1.kernels import triton_ops as tri  # noqa: E402
from s1.kernels.cross_entropy import fused_linear_cross_entropy_fwd  # noqa: E402
from tests.kernels.helpers import poisoned_allocations  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
# (atol, rtol) per dtype, for |got - want| <= atol + rtol * |want| against an fp64 reference
TOL = {torch.float32: (2e-5, 2e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}
# fp32 on GPU: tl.dot uses ieee for attention, but the CE matmuls are cuBLAS (tf32 off by default)


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype, what: str, scale: float = 1.0):
    """Elementwise check with the dtype's tolerance; the message names the worst element."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    atol, rtol = TOL[dtype]
    atol *= scale
    g = got.detach().double().cpu()
    w = want.detach().double().cpu()
    err = (g - w).abs()
    bound = atol + rtol * w.abs()
    bad = ~(err <= bound)  # NaN (unwritten, poisoned) counts as bad
    if bad.any():
        excess = torch.where(bad, torch.nan_to_num(err - bound, nan=float("inf")), torch.zeros_like(err))
        i = int(excess.flatten().argmax())
        idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), g.shape))
        raise AssertionError(f"{what} ({dtype}): {int(bad.sum())}/{g.numel()} elements out of tolerance "
                             f"(atol={atol:g}, rtol={rtol:g}); worst at {idx}: got {g.flatten()[i]:.6g}, "
                             f"want {w.flatten()[i]:.6g}; max abs err {torch.nan_to_num(err, nan=float('inf')).max():.3g}")


def grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_out)


def leaf(t, dtype):
    return t.to(device=DEVICE, dtype=dtype).requires_grad_()


def leaf64(t):
    return t.detach().to(device=DEVICE, dtype=torch.float64).requires_grad_()


# ------------------------------------------------------------------------------------ attention
def cu(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.int32, device=DEVICE)


def attention_case(seed, lq, lk, Hq, Hk, D, causal, dtype, tiles=None, monkeypatch=None):
    gen = torch.Generator().manual_seed(seed)
    cq, ck = cu(lq), cu(lk)
    q = leaf(torch.randn(sum(lq), Hq, D, generator=gen), dtype)
    k = leaf(torch.randn(sum(lk), Hk, D, generator=gen), dtype)
    v = leaf(torch.randn(sum(lk), Hk, D, generator=gen), dtype)
    do = torch.randn(sum(lq), Hq, D, generator=gen).to(device=DEVICE, dtype=dtype)
    scale = D ** -0.5
    if tiles and monkeypatch is not None and os.environ.get("TRITON_INTERPRET") == "1":
        tiles = dict(tiles)
        # "keys_as_rows": which of the two dK/dV tile orientations the interpreter runs
        monkeypatch.setattr(flash_attn, "INTERPRET_KEYS_AS_ROWS", tiles.pop("keys_as_rows", True))
        monkeypatch.setattr(flash_attn, "INTERPRET_TILES", tiles)
    with poisoned_allocations():
        out = tri.attention(q, k, v, cq, ck, max(lq), max(lk), scale, causal)
        dq, dk, dv = grads(out, (q, k, v), do)
    q64, k64, v64 = leaf64(q), leaf64(k), leaf64(v)
    out64 = ref.attention(q64, k64, v64, cq, ck, max(lq), max(lk), scale, causal)
    rq, rk, rv = grads(out64, (q64, k64, v64), do.double())
    tag = f"attention lq={lq} lk={lk} Hq={Hq} Hk={Hk} D={D} causal={causal}"
    assert out.dtype == dtype
    assert_close(out, out64, dtype, f"{tag} out")
    assert_close(dq, rq, dtype, f"{tag} dq")
    # dk/dv sum over the group's query heads and all query rows: scale the atol with sqrt(group)
    g = (Hq // Hk) ** 0.5
    assert_close(dk, rk, dtype, f"{tag} dk", scale=2 * g)
    assert_close(dv, rv, dtype, f"{tag} dv", scale=2 * g)


def ragged(seed, n, lo, hi, ones=1):
    rng = random.Random(seed)
    lens = [rng.randint(lo, hi) for _ in range(n)]
    for i in range(ones):
        lens[rng.randrange(n)] = 1  # length-1 sequences
    return lens


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [
    # (name, lq, lk, Hq, Hk, D, causal, tiles (interpreter BLOCK_M, BLOCK_N per kernel))
    ("packed_gqa7_hd64", ragged(1, 4, 2, 75), None, 7, 1, 64, True, None),
    ("packed_gqa7_hd64_qrows", ragged(4, 3, 2, 60), None, 7, 1, 64, True,
     {"fwd": (32, 32), "dkdv": (16, 32), "dq": (32, 32), "keys_as_rows": False}),
    ("packed_gqa6_hd128", ragged(2, 3, 20, 70), None, 6, 1, 128, True,
     {"fwd": (16, 32), "dkdv": (32, 16), "dq": (16, 32)}),
    ("mha_noncausal_hd64", ragged(3, 2, 30, 61), None, 2, 2, 64, False, None),
    ("prefix_prefill_gqa7", [1, 0, 17, 40], [33, 5, 17, 95], 7, 1, 64, True,  # incl. a 0-query sequence
     {"fwd": (16, 16), "dkdv": (16, 32), "dq": (32, 16)}),
    ("prefix_prefill_gqa6_qrows", [3, 29], [50, 41], 6, 1, 128, True,
     {"fwd": (16, 32), "dkdv": (32, 16), "dq": (16, 16), "keys_as_rows": False}),
    ("decode_q1_gqa2_hd128", [1, 1, 1], [1, 45, 70], 4, 2, 128, True, None),
    ("single_hd32_tiles", [83], None, 3, 3, 32, True, {"fwd": (64, 16), "dkdv": (16, 64), "dq": (64, 16)}),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_attention_fwd_bwd(case, dtype, monkeypatch):
    name, lq, lk, Hq, Hk, D, causal, tiles = case
    attention_case(zlib.crc32(name.encode()), lq, lk if lk is not None else lq, Hq, Hk, D, causal, dtype, tiles, monkeypatch)


def test_attention_and_rope_on_strided_views():
    # q, k, v as head-slices of one fused [T, Hq + 2 Hk, D] projection: non-contiguous token strides
    lens, Hq, Hk, D = [9, 1, 30], 4, 2, 64
    T = sum(lens)
    gen = torch.Generator().manual_seed(29)
    qkv = torch.randn(T, Hq + 2 * Hk, D, generator=gen).to(DEVICE).requires_grad_()
    cos, sin = torch.randn(T, D, generator=gen).to(DEVICE), torch.randn(T, D, generator=gen).to(DEVICE)
    do = torch.randn(T, Hq, D, generator=gen).to(DEVICE)
    c = cu(lens)

    def run(ops, x):
        q, k, v = x[:, :Hq], x[:, Hq:Hq + Hk], x[:, Hq + Hk:]
        q, k = ops.rope(q, k, cos, sin)
        return ops.attention(q, k, v, c, c, max(lens), max(lens), D ** -0.5, True)

    with poisoned_allocations():
        out = run(tri, qkv)
        (g,) = grads(out, (qkv,), do)
    x64 = leaf64(qkv)
    out64 = run(ref, x64)
    (g64,) = grads(out64, (x64,), do.double())
    assert_close(out, out64, torch.float32, "strided attention out")
    assert_close(g, g64, torch.float32, "strided attention dqkv", scale=4)


def test_attention_padded_matches_varlen_reference():
    gen = torch.Generator().manual_seed(7)
    B, Sq, Sk, Hq, Hk, D = 2, 19, 37, 4, 2, 64
    q = torch.randn(B, Sq, Hq, D, generator=gen).to(DEVICE)
    k = torch.randn(B, Sk, Hk, D, generator=gen).to(DEVICE)
    v = torch.randn(B, Sk, Hk, D, generator=gen).to(DEVICE)
    with poisoned_allocations():
        out = flash_attn.attention_padded(q, k, v, causal=True)
    want = ref.attention(q.reshape(-1, Hq, D).double(), k.reshape(-1, Hk, D).double(), v.reshape(-1, Hk, D).double(),
                         cu([Sq] * B), cu([Sk] * B), Sq, Sk, D ** -0.5, True).view(B, Sq, Hq, D)
    assert_close(out, want, torch.float32, "attention_padded")


def test_attention_rejects_bad_input():
    q = torch.randn(10, 6, 64, device=DEVICE)
    k = torch.randn(10, 4, 64, device=DEVICE)
    c = cu([10])
    with pytest.raises(ValueError, match="multiple of num kv heads"):
        tri.attention(q, k, k, c, c, 10, 10, 0.125)
    with pytest.raises(ValueError, match="head_dim 48"):
        x = torch.randn(10, 2, 48, device=DEVICE)
        tri.attention(x, x, x, c, c, 10, 10, 0.125)
    with pytest.raises(ValueError, match="int32"):
        x = torch.randn(10, 2, 64, device=DEVICE)
        tri.attention(x, x, x, c.long(), c.long(), 10, 10, 0.125)


def test_attention_flops_formula():
    # causal square: lq(lq+1)/2 visible pairs; prefix prefill adds lq*(lk-lq)
    assert flash_attn.attention_flops([4], [4], 1, 8, True) == 4 * 10 * 8
    assert flash_attn.attention_flops([2], [5], 2, 8, True) == 4 * (2 * 3 + 3) * 8 * 2
    assert flash_attn.attention_flops([3], [3], 1, 8, False, backward=True) == 2.5 * 4 * 9 * 8


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
    g = (Hq // Hk) ** 0.5  # dk/dv sum over the group's query heads (as attention_case)
    for name, a, b, s in zip(("dq", "dk", "dv"), grads_got, grads_want, (1.0, 2 * g, 2 * g)):
        assert_close(a, b, dtype, f"{tag} {name}", scale=s)


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


# ------------------------------------------------------------------------------------ rms_norm
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,wdtype,tiling", [((37, 96), None, (8, 3)), ((3, 13, 200), None, None),
                                                 ((5, 64), torch.float32, (2, 2))],
                         ids=["2d_h96_tiles8x3progs", "3d_h200", "mixed_fp32_weight"])
def test_rms_norm_fwd_bwd(shape, wdtype, tiling, dtype, monkeypatch):
    if tiling:  # interpreter: ragged row tiles, several tiles per program, several programs
        import s1.kernels.rmsnorm as rn
        monkeypatch.setattr(rn, "INTERPRET_ROWS", tiling[0])
        monkeypatch.setattr(rn, "INTERPRET_MAX_PROGS", tiling[1])
    gen = torch.Generator().manual_seed(11)
    x = leaf(torch.randn(shape, generator=gen) * 3, dtype)
    w = leaf(1 + 0.1 * torch.randn(shape[-1], generator=gen), wdtype or dtype)
    dy_dtype = torch.result_type(w, x)
    dy = torch.randn(shape, generator=gen).to(device=DEVICE, dtype=dy_dtype)
    with poisoned_allocations():
        y = tri.rms_norm(x, w, 1e-6)
        dx, dw = grads(y, (x, w), dy)
    y_ref = ref.rms_norm(x, w, 1e-6)  # same dtypes: the HF cast order is part of what is tested
    dx_ref, dw_ref = grads(y_ref, (x, w), dy)
    assert y.dtype == y_ref.dtype
    assert_close(y, y_ref, dtype, f"rms_norm{shape} y")
    assert_close(dx, dx_ref, dtype, f"rms_norm{shape} dx")
    n_rows = x.numel() // shape[-1]
    assert_close(dw, dw_ref, dtype, f"rms_norm{shape} dw", scale=n_rows ** 0.5)


# ------------------------------------------------------------------------------------ rope
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("Hq,Hk,D", [(7, 1, 64), (6, 1, 128), (3, 3, 64)])
def test_rope_fwd_bwd(Hq, Hk, D, dtype, monkeypatch):
    import s1.kernels.rope as rp
    monkeypatch.setattr(rp, "INTERPRET_ROWS", 16)  # several ragged (token, head) tiles
    from s1.model.qwen2 import packed_positions, rope_cos_sin
    lens = ragged(5, 3, 1, 30)
    T = sum(lens)
    pos = packed_positions(cu(lens), T)  # restarts at 0 for every packed sequence
    cos, sin = rope_cos_sin(pos, D, 1e6)
    gen = torch.Generator().manual_seed(13)
    q = leaf(torch.randn(T, Hq, D, generator=gen), dtype)
    k = leaf(torch.randn(T, Hk, D, generator=gen), dtype)
    gq = torch.randn(T, Hq, D, generator=gen).to(DEVICE, dtype)
    gk = torch.randn(T, Hk, D, generator=gen).to(DEVICE, dtype)
    with poisoned_allocations():
        qo, ko = tri.rope(q, k, cos, sin)
        dq, dk = grads((qo, ko), (q, k), (gq, gk))
    q64, k64 = leaf64(q), leaf64(k)
    qr, kr = ref.rope(q64, k64, cos.to(dtype).double(), sin.to(dtype).double())
    dqr, dkr = grads((qr, kr), (q64, k64), (gq.double(), gk.double()))
    for name, a, b in (("q", qo, qr), ("k", ko, kr), ("dq", dq, dqr), ("dk", dk, dkr)):
        assert_close(a, b, dtype, f"rope Hq={Hq} Hk={Hk} D={D} {name}")


# ------------------------------------------------------------------------------------ swiglu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (37, 113), (3, 5, 97)])
def test_swiglu_fwd_bwd(shape, dtype):
    gen = torch.Generator().manual_seed(17)
    g = leaf(torch.randn(shape, generator=gen) * 4, dtype)
    u = leaf(torch.randn(shape, generator=gen), dtype)
    dy = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    with poisoned_allocations():
        y = tri.swiglu(g, u)
        dg, du = grads(y, (g, u), dy)
    y_ref = ref.swiglu(g, u)
    dg_ref, du_ref = grads(y_ref, (g, u), dy)
    assert_close(y, y_ref, dtype, f"swiglu{shape} y")
    assert_close(dg, dg_ref, dtype, f"swiglu{shape} dgate")
    assert_close(du, du_ref, dtype, f"swiglu{shape} dup")


# ------------------------------------------------------------------------------------ fused CE
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N,V,H,chunk", [(77, 2500, 48, 16), (5, 1031, 32, None), (64, 3000, 64, 64)])
def test_linear_cross_entropy_fwd_bwd(N, V, H, chunk, dtype, monkeypatch):
    gen = torch.Generator().manual_seed(19)
    hidden = leaf(torch.randn(N, H, generator=gen), dtype)
    weight = leaf(torch.randn(V, H, generator=gen) * 0.3, dtype)
    labels = torch.randint(0, V, (N,), generator=gen)
    labels[torch.randperm(N, generator=gen)[: N // 4]] = -100  # ignored positions
    labels = labels.to(DEVICE)
    if chunk is not None:  # force several chunks of tokens
        import s1.kernels.cross_entropy as ce
        monkeypatch.setattr(ce, "_chunk_size", lambda n, v, h: chunk)
    with poisoned_allocations():
        loss = tri.linear_cross_entropy(hidden, weight, labels)
        dh, dw = grads(loss * 3.0, (hidden, weight), None)  # grad_output != 1 must scale both
    loss_ref = ref.linear_cross_entropy(hidden, weight, labels)  # logits in dtype, then fp32 (HF)
    dh_ref, dw_ref = grads(loss_ref * 3.0, (hidden, weight), None)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    n_valid = int((labels != -100).sum())
    assert_close(loss, loss_ref, dtype, f"CE N={N} V={V} loss", scale=n_valid)
    assert_close(dh, dh_ref, dtype, f"CE N={N} V={V} dhidden")
    assert_close(dw, dw_ref, dtype, f"CE N={N} V={V} dweight", scale=N ** 0.5)


def test_linear_cross_entropy_edge_cases():
    hidden = torch.randn(6, 16, device=DEVICE, requires_grad=True)
    weight = torch.randn(50, 16, device=DEVICE, requires_grad=True)
    labels = torch.full((6,), -100, device=DEVICE)
    loss = tri.linear_cross_entropy(hidden, weight, labels)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0
    with pytest.raises(ValueError, match="label 50 at token 2"):
        tri.linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 50, 2, 3, 4], device=DEVICE))
    with torch.no_grad():  # no gradients requested: loss only, same value
        l1 = tri.linear_cross_entropy(hidden, weight, torch.arange(6, device=DEVICE))
    loss_only, gh, gw = fused_linear_cross_entropy_fwd(hidden.detach(), weight.detach(), torch.arange(6, device=DEVICE),
                                                       need_grad_hidden=False, need_grad_weight=False)
    want = ref.linear_cross_entropy(hidden.detach(), weight.detach(), torch.arange(6, device=DEVICE))
    assert gh is None and gw is None
    assert_close(l1, want, torch.float32, "CE no_grad loss", scale=6)
    assert_close(loss_only, want, torch.float32, "CE loss-only", scale=6)


# ------------------------------------------------------------------------------------ whole model
def test_model_triton_backend_matches_torch_backend():
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=300, hidden_size=128, intermediate_size=200, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, torch_dtype="float32")
    model = Qwen2ForCausalLM(cfg).to(DEVICE)
    model.init_weights(seed=0)
    with torch.no_grad():  # non-trivial norm weights and biases so their gradients are tested
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    lens = [23, 1, 40]
    T = sum(lens)
    gen = torch.Generator().manual_seed(23)
    ids = torch.randint(0, cfg.vocab_size, (T,), generator=gen).to(DEVICE)
    labels = torch.randint(0, cfg.vocab_size, (T,), generator=gen).to(DEVICE)
    labels[:5] = -100
    cu_seqlens = cu(lens)

    def run(backend):
        model.zero_grad(set_to_none=True)
        with kernels.use_backend(backend):
            assert kernels.backend_name(torch.device(DEVICE)) == backend
            logits = model(ids, cu_seqlens=cu_seqlens, max_seqlen=max(lens))
            loss = model(ids, cu_seqlens=cu_seqlens, max_seqlen=max(lens), labels=labels)
            (loss + 1e-2 * logits.float().pow(2).sum()).backward()  # gradient through the logits path too
        return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    logits_t, loss_t, grads_t = run("triton")
    logits_r, loss_r, grads_r = run("torch")
    assert_close(logits_t, logits_r, torch.float32, "model logits")
    assert_close(loss_t, loss_r, torch.float32, "model loss", scale=T)
    assert set(grads_t) == set(grads_r)
    for name in grads_r:
        assert_close(grads_t[name], grads_r[name], torch.float32, f"model grad {name}", scale=10)


def test_model_kv_cache_prefill_over_prefix_triton_matches_no_cache():
    # chunked prefill through the KV cache: the second chunk's queries are the last tokens of a
    # longer key sequence (q_len < k_len, bottom-right causal); its logits must equal one
    # cache-free pass over the whole sequence (reference backend).
    from tests._lib_helpers import ContiguousKVCache
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=200, hidden_size=128, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, torch_dtype="float32")
    model = Qwen2ForCausalLM(cfg).to(DEVICE)
    model.init_weights(seed=1)
    gen = torch.Generator().manual_seed(31)
    lens, first = [30, 19], [11, 1]  # tokens per sequence; tokens in the first chunk
    ids = [torch.randint(0, cfg.vocab_size, (n,), generator=gen).to(DEVICE) for n in lens]
    with torch.no_grad():
        with kernels.use_backend("torch"):
            full = model(torch.cat(ids), cu_seqlens=cu(lens), max_seqlen=max(lens))
        cache = ContiguousKVCache(cfg, num_slots=2, max_len=64, device=DEVICE, dtype=torch.float32)
        with kernels.use_backend("triton"):
            pos = cache.prepare([0, 1], first)
            model(torch.cat([x[:f] for x, f in zip(ids, first)]), positions=pos, kv_cache=cache)
            cache.advance()
            rest = [n - f for n, f in zip(lens, first)]
            pos = cache.prepare([0, 1], rest)
            out = model(torch.cat([x[f:] for x, f in zip(ids, first)]), positions=pos, kv_cache=cache)
            cache.advance()
    want = torch.cat([full[:lens[0]][first[0]:], full[lens[0]:][first[1]:]])
    assert_close(out, want, torch.float32, "chunked prefill logits (triton, KV cache) vs one pass", scale=5)
