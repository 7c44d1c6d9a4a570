"""Triton backend: every op of s1/kernels/reference.py with exactly its signature.

Each op is a torch.autograd.Function over Triton kernels (forward and backward), defined in its
own file: flash_attn.py, rmsnorm.py, rope.py, swiglu.py, cross_entropy.py; the inference ops (no
gradient) in kv_store.py, paged_attention.py and sampling.py (gumbel_argmax, sample_and_force). On CUDA they compile for the GPU; on a machine without CUDA this
module turns on Triton's CPU interpreter (TRITON_INTERPRET=1) *before* the kernels are defined,
so `s1.kernels.use_backend("triton")` works on CPU tensors (slowly: for tests). Set TRITON_INTERPRET
yourself to override.
"""
from __future__ import annotations

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from s1.kernels import sampling as _sampling  # noqa: E402
from s1.kernels.cross_entropy import linear_cross_entropy as _linear_cross_entropy  # noqa: E402
from s1.kernels.flash_attn import attention as _attention  # noqa: E402
from s1.kernels.flash_attn import attention_padded  # noqa: E402,F401
from s1.kernels.kv_store import kv_store_triton as _kv_store  # noqa: E402
from s1.kernels.paged_attention import paged_attention_triton as _paged_attention  # noqa: E402
from s1.kernels.reference import filtered_choices  # noqa: E402,F401  (torch sort pre-pass on both backends)
from s1.kernels.rmsnorm import rms_norm as _rms_norm  # noqa: E402
from s1.kernels.rope import rope as _rope  # noqa: E402
from s1.kernels.swiglu import swiglu as _swiglu  # noqa: E402


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
    return _sampling.gumbel_argmax(logits, inv_temperature, seed, pos, vocab_size, mask_ids)


def sample_and_force(logits, rows, tables, vocab_size: int, pad_id: int, given=None, *, id_offset: int = 0,
                     gather=None) -> torch.Tensor:
    """Sampling + budget forcing in one fused pass (s1/kernels/force_state.py): [NUM_RESULT, B] int64.
    id_offset / gather: logits are a tensor-parallel vocabulary shard (see s1/kernels/reference.py)."""
    return _sampling.sample_and_force(logits, rows, tables, vocab_size, pad_id, given, id_offset=id_offset,
                                      gather=gather)


def sample_partials(logits, rows, tables, vocab_size: int, id_offset: int = 0) -> torch.Tensor:
    """Stage 1 on a vocabulary shard: packed (score, global id) partials int32 [2, 2, B]."""
    return _sampling.sample_partials(logits, rows, tables, vocab_size, id_offset)


def force_from_partials(parts, rows, tables, vocab_size: int, pad_id: int) -> torch.Tensor:
    """Stage 2: reduce every shard's partials [W, 2, 2, B] and apply the rules: [NUM_RESULT, B] int64."""
    return _sampling.force_from_partials(parts, rows, tables, vocab_size, pad_id)


def kv_store(k, v, k_cache, v_cache, slot_mapping) -> None:
    """Store k, v [T, Hk, D] at their cache slots (slot -1: skipped)."""
    _kv_store(k, v, k_cache, v_cache, slot_mapping)


def paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale: float, max_context=None):
    """Decode attention of q [B, Hq, D] over paged K/V (split-K + log-sum-exp merge)."""
    return _paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale, max_context)
