"""Paged KV cache implementing the model's cache protocol (s1/model/qwen2.py's docstring).

Storage per layer: k, v [num_pages, page_size, Hk, D] (one tensor [L, P, page, Hk, D] each).
The runner fills one `StepMeta` before each forward (nano-vllm's "context"); every layer's
`attend` then stores this step's K/V rows into their slots and attends:
- prefill: varlen attention (`ops.attention`, bottom-right causal) of the new tokens over
  [cached prefix + new tokens]; without prefix hits the fresh k/v are used directly, otherwise
  the keys are gathered from the pages by slot;
- decode: one query per sequence through `ops.paged_attention`.
The store and both attentions come from the `ops` namespace the model passes down (the engine's
kernel switch, decided once per engine: Triton kernels or their PyTorch references).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from s1.model.config import Qwen2Config


@dataclass
class StepMeta:
    is_prefill: bool
    slot_mapping: torch.Tensor                 # [T] int64 cache slot of each new token (-1: skip)
    # prefill
    cu_seqlens_q: torch.Tensor | None = None   # [B+1] int32
    cu_seqlens_k: torch.Tensor | None = None   # [B+1] int32 (cached + new)
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    gather_slots: torch.Tensor | None = None   # [Tk] int64 slots of all keys; None: no prefix hit
    # decode
    block_tables: torch.Tensor | None = None   # [B, pages] int32
    context_lens: torch.Tensor | None = None   # [B] int32 (this step's token included)
    max_context: int = 0                       # upper bound of context_lens (fixes the grid)


def kv_bytes_per_token(cfg: Qwen2Config, dtype: torch.dtype) -> int:
    """K and V of every layer for one token: 2 * L * Hk * D * itemsize (12,288 B for 0.5B bf16)."""
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * torch.finfo(dtype).bits // 8


class PagedKVCache:
    def __init__(self, cfg: Qwen2Config, num_pages: int, page_size: int, device, dtype: torch.dtype):
        shape = (cfg.num_hidden_layers, num_pages, page_size, cfg.num_key_value_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.num_pages = num_pages
        self.page_size = page_size
        self.meta: StepMeta | None = None

    def attend(self, layer_idx: int, q, k, v, scale: float, ops):
        m = self.meta
        if m is None:
            raise RuntimeError("PagedKVCache.attend called without step metadata (runner must set .meta)")
        kc, vc = self.k[layer_idx], self.v[layer_idx]
        ops.kv_store(k, v, kc, vc, m.slot_mapping)
        if m.is_prefill:
            if m.gather_slots is not None:
                Hk, D = k.shape[1:]
                k = kc.view(-1, Hk, D).index_select(0, m.gather_slots)
                v = vc.view(-1, Hk, D).index_select(0, m.gather_slots)
            return ops.attention(q, k, v, m.cu_seqlens_q, m.cu_seqlens_k, m.max_seqlen_q,
                                 m.max_seqlen_k, scale, True)
        return ops.paged_attention(q, kc, vc, m.block_tables, m.context_lens, scale, m.max_context)
