"""SwiGLU (silu(gate) * up) forward/backward in Triton, with HF Qwen2MLP numerics.

Reference: F.silu(gate) * up in the activation dtype, i.e. silu computed in fp32 and rounded to
the input dtype, then the product rounded once. We do the same (exact in fp32, identical rounding
steps in fp16/bf16). Backward, with s = sigmoid(g):
    d_up   = dy * silu(g)            (silu rounded as in the forward)
    d_gate = dy * up * s * (1 + g * (1 - s))
Elementwise over flattened contiguous tensors: 1 load of g and u and 1 store per element forward
(3 x elem bytes), 3 loads + 2 stores backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from s1.kernels.triton_utils import check_device, interpreting


@triton.jit
def _swiglu_fwd_kernel(g_ptr, u_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.cast(pid, tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    g_raw = tl.load(g_ptr + offs, mask=mask, other=0.0)
    g = g_raw.to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    silu = (g * tl.sigmoid(g)).to(g_raw.dtype).to(tl.float32)
    tl.store(y_ptr + offs, (silu * u).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(g_ptr, u_ptr, dy_ptr, dg_ptr, du_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.cast(pid, tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    g_raw = tl.load(g_ptr + offs, mask=mask, other=0.0)
    g = g_raw.to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(g)
    silu = (g * s).to(g_raw.dtype).to(tl.float32)
    du = dy * silu
    dg = dy * u * s * (1.0 + g * (1.0 - s))
    tl.store(dg_ptr + offs, dg.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=mask)


def _block(n: int) -> tuple[int, int]:
    if interpreting():
        return max(16, min(triton.next_power_of_2(max(n, 1)), 1 << 16)), 1
    return 2048, 8  # 8 warps x 32 lanes x 8 elements: 16-byte vector loads in bf16


def _check(gate, up):
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ in shape")
    if gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate dtype {gate.dtype} != up dtype {up.dtype}")
    check_device("swiglu", gate, up)


def swiglu_fwd(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    _check(gate, up)
    g, u = gate.contiguous(), up.contiguous()
    y = torch.empty_like(g)
    n = g.numel()
    if n:
        block, warps = _block(n)
        _swiglu_fwd_kernel[(triton.cdiv(n, block),)](g, u, y, n, BLOCK=block, num_warps=warps)
    return y


def swiglu_bwd(dy, gate, up):
    g, u, dy = gate.contiguous(), up.contiguous(), dy.contiguous()
    dg = torch.empty_like(g)
    du = torch.empty_like(u)
    n = g.numel()
    if n:
        block, warps = _block(n)
        _swiglu_bwd_kernel[(triton.cdiv(n, block),)](g, u, dy, dg, du, n, BLOCK=block, num_warps=warps)
    return dg, du


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return swiglu_fwd(gate, up)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        return swiglu_bwd(dy, gate, up)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return SwiGLUFunction.apply(gate, up)
