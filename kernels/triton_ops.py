"""Triton backend: the five hot ops with exactly kernels/reference.py's signatures, plus sampling.

Each op is a torch.autograd.Function over Triton kernels (forward and backward), defined in its
own file: flash_attn.py, rmsnorm.py, rope.py, swiglu.py, cross_entropy.py; gumbel_argmax (no
gradient) is in sampling.py. On CUDA they compile for the GPU; on a machine without CUDA this
module turns on Triton's CPU interpreter (TRITON_INTERPRET=1) *before* the kernels are defined,
so `kernels.use_backend("triton")` works on CPU tensors (slowly: for tests). Set TRITON_INTERPRET
yourself to override.
"""
from __future__ import annotations

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from kernels.cross_entropy import linear_cross_entropy as _linear_cross_entropy  # noqa: E402
from kernels.flash_attn import attention as _attention  # noqa: E402
from kernels.flash_attn import attention_padded  # noqa: E402,F401
from kernels.rmsnorm import rms_norm as _rms_norm  # noqa: E402
from kernels.rope import rope as _rope  # noqa: E402
from kernels.sampling import gumbel_argmax as _gumbel_argmax  # noqa: E402
from kernels.swiglu import swiglu as _swiglu  # noqa: E402


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2RMSNorm: fp32 statistics, cast back to x.dtype, then times weight."""
    return _rms_norm(x, weight, eps)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE on q [T, Hq, D] and k [T, Hk, D] with per-token cos/sin [T, D] fp32."""
    return _rope(q, k, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in the activation dtype."""
    return _swiglu(gate, up)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
              max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool = True) -> torch.Tensor:
    """Varlen FlashAttention-2 (bottom-right causal, GQA); q [Tq, Hq, D], k/v [Tk, Hk, D]."""
    return _attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """Summed CE of hidden @ weight.T without materializing the [N, V] logits (fp32 scalar)."""
    return _linear_cross_entropy(hidden, weight, labels, ignore_index)


def gumbel_argmax(logits: torch.Tensor, inv_temperature: torch.Tensor, seed: torch.Tensor,
                  pos: torch.Tensor, vocab_size: int, mask_ids: torch.Tensor):
    """Fused Gumbel-max sampling: (t_u, t_m) int64 [B] from logits [B, V] read once (no [B, V] noise)."""
    return _gumbel_argmax(logits, inv_temperature, seed, pos, vocab_size, mask_ids)
