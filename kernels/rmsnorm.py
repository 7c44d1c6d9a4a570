"""RMSNorm forward/backward in Triton, with Qwen2RMSNorm's (HF) numerics.

HF order (kernels/reference.py::rms_norm):  y = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(x.dtype)
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

from kernels.triton_utils import check_device, interpreting


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, N, H, stride_x, stride_y, eps,
                         BLOCK_H: tl.constexpr, ROWS_PER_PROG: tl.constexpr):
    # One program normalizes ROWS_PER_PROG consecutive rows; the whole row fits in BLOCK_H.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    for i in range(ROWS_PER_PROG):
        row = pid * ROWS_PER_PROG + i
        if row < N:
            row64 = tl.cast(row, tl.int64)
            x_raw = tl.load(x_ptr + row64 * stride_x + cols, mask=cmask, other=0.0)
            x = x_raw.to(tl.float32)
            var = tl.sum(x * x, axis=0) / H
            rstd = tl.math.rsqrt(var + eps)
            # cast back to the input dtype before the weight multiply (HF order)
            n = (x * rstd).to(x_raw.dtype).to(tl.float32)
            y = w * n
            tl.store(y_ptr + row64 * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=cmask)
            tl.store(rstd_ptr + row, rstd)


@triton.jit
def _rms_norm_bwd_kernel(x_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dw_part_ptr, N, H,
                         stride_x, stride_dy, stride_dx,
                         BLOCK_H: tl.constexpr, ROWS_PER_PROG: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for i in range(ROWS_PER_PROG):
        row = pid * ROWS_PER_PROG + i
        if row < N:
            row64 = tl.cast(row, tl.int64)
            x_raw = tl.load(x_ptr + row64 * stride_x + cols, mask=cmask, other=0.0)
            x = x_raw.to(tl.float32)
            dy = tl.load(dy_ptr + row64 * stride_dy + cols, mask=cmask, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            xhat = x * rstd
            n = xhat.to(x_raw.dtype).to(tl.float32)
            dw_acc += dy * n
            dn = (dy * w).to(x_raw.dtype).to(tl.float32)
            c = tl.sum(dn * xhat, axis=0) / H
            dx = rstd * (dn - xhat * c)
            tl.store(dx_ptr + row64 * stride_dx + cols, dx.to(dx_ptr.dtype.element_ty), mask=cmask)
    tl.store(dw_part_ptr + pid * H + cols, dw_acc, mask=cmask)


def _config(H: int, N: int, backward: bool):
    block_h = triton.next_power_of_2(H)
    if interpreting():
        # the interpreter pays per program: fewer, longer programs
        rows = max(1, min(64, N))
        return block_h, rows, 1
    num_warps = 4 if block_h <= 1024 else 8 if block_h <= 4096 else 16
    if backward:
        # enough programs to fill the GPU, few enough that the [P, H] dw partials stay small
        sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        rows = max(1, triton.cdiv(N, 4 * sms))
    else:
        rows = 1  # one row per program: N programs keep every SM busy for N >= a few thousand
    return block_h, rows, num_warps


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
        block_h, rows, warps = _config(H, N, backward=False)
        grid = (triton.cdiv(N, rows),)
        _rms_norm_fwd_kernel[grid](x2, weight.contiguous(), y, rstd, N, H, x2.stride(0), y.stride(0), float(eps),
                                   BLOCK_H=block_h, ROWS_PER_PROG=rows, num_warps=warps)
    return y.view(x.shape), rstd


def rms_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    x2 = _as_rows(x)
    dy2 = _as_rows(dy)
    N, H = x2.shape
    dx = torch.empty((N, H), dtype=x.dtype, device=x.device)
    block_h, rows, warps = _config(H, N, backward=True)
    P = max(1, triton.cdiv(N, rows))
    dw_part = torch.empty((P, H), dtype=torch.float32, device=x.device)
    if N > 0:
        _rms_norm_bwd_kernel[(P,)](x2, weight.contiguous(), dy2, rstd, dx, dw_part, N, H,
                                   x2.stride(0), dy2.stride(0), dx.stride(0),
                                   BLOCK_H=block_h, ROWS_PER_PROG=rows, num_warps=warps)
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
