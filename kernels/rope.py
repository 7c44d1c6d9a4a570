"""Rotate-half RoPE forward/backward for q and k in Triton (HF Qwen2 `apply_rotary_pos_emb`).

q [T, Hq, D], k [T, Hk, D] (last dim contiguous), cos/sin [T, D] fp32 per token (packed sequences
restart their positions at 0; the caller computes cos/sin from positions). HF casts cos/sin to the
activation dtype first; we do the same, then compute in fp32 and round once.
With x = [x1, x2] (halves of D) and c = [c1, c2], s = [s1, s2]:
    forward   o1 = x1*c1 - x2*s1          o2 = x2*c2 + x1*s2
    backward  d1 = g1*c1 + g2*s2          d2 = g2*c2 - g1*s1      (transpose of the rotation)
One program per token rotates all heads of one tensor: cos/sin are read once per token.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_utils import check_device, interpreting


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, o_ptr, T, NH,
                 stride_xt, stride_xh, stride_ct, stride_st, stride_ot, stride_oh,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, BACKWARD: tl.constexpr):
    t = tl.cast(tl.program_id(0), tl.int64)
    d = tl.arange(0, HALF)
    c1 = tl.load(cos_ptr + t * stride_ct + d).to(x_ptr.dtype.element_ty).to(tl.float32)
    c2 = tl.load(cos_ptr + t * stride_ct + HALF + d).to(x_ptr.dtype.element_ty).to(tl.float32)
    s1 = tl.load(sin_ptr + t * stride_st + d).to(x_ptr.dtype.element_ty).to(tl.float32)
    s2 = tl.load(sin_ptr + t * stride_st + HALF + d).to(x_ptr.dtype.element_ty).to(tl.float32)
    for h0 in range(0, NH, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        m = (h < NH)[:, None]
        base_x = x_ptr + t * stride_xt + h[:, None] * stride_xh + d[None, :]
        x1 = tl.load(base_x, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(base_x + HALF, mask=m, other=0.0).to(tl.float32)
        if BACKWARD:
            o1 = x1 * c1[None, :] + x2 * s2[None, :]
            o2 = x2 * c2[None, :] - x1 * s1[None, :]
        else:
            o1 = x1 * c1[None, :] - x2 * s1[None, :]
            o2 = x2 * c2[None, :] + x1 * s2[None, :]
        base_o = o_ptr + t * stride_ot + h[:, None] * stride_oh + d[None, :]
        tl.store(base_o, o1.to(o_ptr.dtype.element_ty), mask=m)
        tl.store(base_o + HALF, o2.to(o_ptr.dtype.element_ty), mask=m)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    T, NH, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty((T, NH, D), dtype=x.dtype, device=x.device)
    if T == 0 or NH == 0:
        return out
    block_h = min(triton.next_power_of_2(NH), 64 if interpreting() else 16)
    warps = 1 if interpreting() else (4 if D * block_h >= 2048 else 2)
    _rope_kernel[(T,)](x, cos, sin, out, T, NH, x.stride(0), x.stride(1), cos.stride(0), sin.stride(0),
                       out.stride(0), out.stride(1), HALF=D // 2, BLOCK_H=block_h, BACKWARD=backward,
                       num_warps=warps)
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
