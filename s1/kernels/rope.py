"""Rotate-half RoPE forward/backward for q and k in Triton (HF Qwen2 `apply_rotary_pos_emb`).

q [T, Hq, D], k [T, Hk, D] (last dim contiguous), cos/sin [T, D] fp32 per token (packed sequences
restart their positions at 0; the caller computes cos/sin from positions). HF casts cos/sin to the
activation dtype first; we do the same, then compute in fp32 and round once.
With x = [x1, x2] (halves of D) and c = [c1, c2], s = [s1, s2]:
    forward   o1 = x1*c1 - x2*s1          o2 = x2*c2 + x1*s2
    backward  d1 = g1*c1 + g2*s2          d2 = g2*c2 - g1*s1      (transpose of the rotation)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from s1.kernels.triton_utils import check_device, interpreting


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, o_ptr, R, NH,
                 stride_xt, stride_xh, stride_ct, stride_st, stride_ot, stride_oh,
                 HALF: tl.constexpr, BLOCK_R: tl.constexpr, BACKWARD: tl.constexpr):
    # rows r = t * NH + h enumerate (token, head) pairs; each program rotates BLOCK_R of them.
    # cos/sin rows are re-read once per head, from cache: HBM traffic stays ~ read x + write out.
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = (r < R)[:, None]
    t = (r // NH).to(tl.int64)
    h = r % NH
    d = tl.arange(0, HALF)[None, :]
    cs = cos_ptr + t[:, None] * stride_ct + d
    sn = sin_ptr + t[:, None] * stride_st + d
    # HF casts cos/sin to the activation dtype before multiplying
    c1 = tl.load(cs, mask=rmask, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    c2 = tl.load(cs + HALF, mask=rmask, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    s1 = tl.load(sn, mask=rmask, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    s2 = tl.load(sn + HALF, mask=rmask, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    base_x = x_ptr + t[:, None] * stride_xt + h[:, None] * stride_xh + d
    x1 = tl.load(base_x, mask=rmask, other=0.0).to(tl.float32)
    x2 = tl.load(base_x + HALF, mask=rmask, other=0.0).to(tl.float32)
    if BACKWARD:
        o1 = x1 * c1 + x2 * s2
        o2 = x2 * c2 - x1 * s1
    else:
        o1 = x1 * c1 - x2 * s1
        o2 = x2 * c2 + x1 * s2
    base_o = o_ptr + t[:, None] * stride_ot + h[:, None] * stride_oh + d
    tl.store(base_o, o1.to(o_ptr.dtype.element_ty), mask=rmask)
    tl.store(base_o + HALF, o2.to(o_ptr.dtype.element_ty), mask=rmask)


INTERPRET_ROWS = None  # (token, head) rows per program in the interpreter; None: 32768 // D


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    T, NH, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty((T, NH, D), dtype=x.dtype, device=x.device)
    R = T * NH
    if R == 0:
        return out
    # ~4K elements per program on GPU; large tiles in the interpreter (cost is per operation)
    block_r = (INTERPRET_ROWS or max(1, 32768 // D)) if interpreting() else max(1, 4096 // D)
    warps = 1 if interpreting() else 4
    _rope_kernel[(triton.cdiv(R, block_r),)](
        x, cos, sin, out, R, NH, x.stride(0), x.stride(1), cos.stride(0), sin.stride(0),
        out.stride(0), out.stride(1), HALF=D // 2, BLOCK_R=block_r, BACKWARD=backward, num_warps=warps)
    return out


def _check(q, k, cos, sin):
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(f"rope: q and k must be [T, H, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    T, _, D = q.shape
    if k.shape[0] != T or k.shape[2] != D:
        raise ValueError(f"rope: k {tuple(k.shape)} does not match q {tuple(q.shape)} in tokens/head_dim")
    if cos.shape != (T, D) or sin.shape != (T, D):
        raise ValueError(f"rope: cos/sin must be [T={T}, D={D}], got {tuple(cos.shape)} / {tuple(sin.shape)}")
    if D % 2 or (D // 2) & (D // 2 - 1):
        raise ValueError(f"rope: head_dim {D} must be 2 x a power of two")
    if q.dtype != k.dtype:
        raise ValueError(f"rope: q dtype {q.dtype} != k dtype {k.dtype}")
    check_device("rope", q, k, cos, sin)


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        cos = cos if cos.stride(-1) == 1 else cos.contiguous()
        sin = sin if sin.stride(-1) == 1 else sin.contiguous()
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, False), _rotate(k, cos, sin, False)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        gq = _rotate(dq, cos, sin, True) if dq is not None else None
        gk = _rotate(dk, cos, sin, True) if dk is not None else None
        return gq, gk, None, None


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    _check(q, k, cos, sin)
    return RoPEFunction.apply(q, k, cos, sin)
