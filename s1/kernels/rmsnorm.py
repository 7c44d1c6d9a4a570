"""RMSNorm forward/backward in Triton, with Qwen2RMSNorm's (HF) numerics.

HF order (s1/kernels/reference.py::rms_norm):  y = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(x.dtype)
i.e. fp32 statistics, cast the normalized row back to the input dtype, *then* multiply by the weight
(output dtype = torch.result_type(weight, x)). We reproduce that cast order exactly; the multiply
itself runs in fp32 and is rounded once, as PyTorch does for half types.

Layout: x [..., H] (any leading dims, last dim contiguous), weight [H].
Forward saves rstd [N] fp32. Backward (n = normalized row in x.dtype, xhat = x32 * rstd):
    dn  = (dy * w)                         rounded to x.dtype (autograd of `weight * n`)
    dx  = rstd * (dn - xhat * mean(dn * xhat))
    dw  = sum_rows dy * n                  partial sums per program, reduced in fp32 by torch
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from s1.kernels.triton_utils import check_device, interpreting


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, N, H, stride_x, stride_y, eps,
                         BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    # One program normalizes a [BLOCK_R, H] tile of rows; a whole row fits in BLOCK_H.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    rmask = rows < N
    cmask = cols < H
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    x_raw = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    x = x_raw.to(tl.float32)
    var = tl.sum(x * x, axis=1) / H
    rstd = tl.math.rsqrt(var + eps)
    # cast back to the input dtype before the weight multiply (HF order)
    n = (x * rstd[:, None]).to(x_raw.dtype).to(tl.float32)
    y = w[None, :] * n
    tl.store(y_ptr + rows64[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _rms_norm_bwd_kernel(x_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dw_part_ptr, N, H,
                         stride_x, stride_dy, stride_dx, tiles_per_prog,
                         BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    # Each program walks `tiles_per_prog` consecutive [BLOCK_R, H] tiles and keeps its share of
    # dw in registers; the [num_programs, H] partials are summed by torch afterwards.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for i in range(tiles_per_prog):
        rows = (pid * tiles_per_prog + i) * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < N
        mask = rmask[:, None] & cmask[None, :]
        rows64 = rows.to(tl.int64)
        x_raw = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
        x = x_raw.to(tl.float32)
        dy = tl.load(dy_ptr + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        xhat = x * rstd[:, None]
        n = xhat.to(x_raw.dtype).to(tl.float32)
        dw_acc += tl.sum(dy * n, axis=0)
        dn = (dy * w[None, :]).to(x_raw.dtype).to(tl.float32)
        c = tl.sum(dn * xhat, axis=1) / H
        dx = rstd[:, None] * (dn - xhat * c[:, None])
        tl.store(dx_ptr + rows64[:, None] * stride_dx + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_part_ptr + pid * H + cols, dw_acc, mask=cmask)


# Interpreter tiling (rows per tile, programs in the backward); tests shrink these to exercise
# ragged tiles and the cross-program dw reduction.
INTERPRET_ROWS = None  # None: 16384 // BLOCK_H
INTERPRET_MAX_PROGS = 1


def _config(H: int):
    """(BLOCK_R, BLOCK_H, num_warps): tiles of ~8K elements on GPU, bigger in the interpreter
    (which pays per operation, not per element)."""
    block_h = triton.next_power_of_2(H)
    if interpreting():
        return INTERPRET_ROWS or max(1, 16384 // block_h), block_h, 1
    block_r = max(1, min(16, 8192 // block_h))
    num_warps = 4 if block_h * block_r <= 4096 else 8 if block_h * block_r <= 16384 else 16
    return block_r, block_h, num_warps


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2


def rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float):
    """y [..., H] (dtype result_type(weight, x)), rstd [N] fp32."""
    if x.shape[-1] != weight.shape[0] or weight.dim() != 1:
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} does not match x's last dim {x.shape[-1]}")
    if x.shape[-1] > 65536:
        raise ValueError(f"rms_norm: hidden size {x.shape[-1]} > 65536 is not supported by the one-block kernel")
    check_device("rms_norm", x, weight)
    x2 = _as_rows(x)
    N, H = x2.shape
    out_dtype = torch.result_type(weight, x)
    y = torch.empty((N, H), dtype=out_dtype, device=x.device)
    rstd = torch.empty((N,), dtype=torch.float32, device=x.device)
    if N > 0:
        block_r, block_h, warps = _config(H)
        _rms_norm_fwd_kernel[(triton.cdiv(N, block_r),)](
            x2, weight.contiguous(), y, rstd, N, H, x2.stride(0), y.stride(0), float(eps),
            BLOCK_R=block_r, BLOCK_H=block_h, num_warps=warps)
    return y.view(x.shape), rstd


def rms_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    x2 = _as_rows(x)
    dy2 = _as_rows(dy)
    N, H = x2.shape
    dx = torch.empty((N, H), dtype=x.dtype, device=x.device)
    block_r, block_h, warps = _config(H)
    n_tiles = triton.cdiv(N, block_r)
    # enough programs to fill the GPU (4 per SM), few enough that the dw partials stay small
    max_progs = INTERPRET_MAX_PROGS if interpreting() else 4 * torch.cuda.get_device_properties(x.device).multi_processor_count
    tiles_per_prog = max(1, triton.cdiv(n_tiles, max_progs))
    P = max(1, triton.cdiv(n_tiles, tiles_per_prog))
    dw_part = torch.empty((P, H), dtype=torch.float32, device=x.device)
    if N > 0:
        _rms_norm_bwd_kernel[(P,)](x2, weight.contiguous(), dy2, rstd, dx, dw_part, N, H,
                                   x2.stride(0), dy2.stride(0), dx.stride(0), tiles_per_prog,
                                   BLOCK_R=block_r, BLOCK_H=block_h, num_warps=warps)
    else:
        dw_part.zero_()
    dw = dw_part.sum(0).to(weight.dtype)
    return dx.view(x.shape), dw


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_bwd(dy, x, weight, rstd)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return RMSNormFunction.apply(x, weight, eps)
