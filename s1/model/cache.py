"""A simple contiguous KV cache implementing the model's cache protocol.

Protocol (what `Attention.forward` calls): `cache.attend(layer_idx, q, k, v, scale, ops) -> out`
with q [T, Hq, D] and k, v [T, Hk, D] for this step's packed tokens; the cache stores k, v and
returns attention of q over everything cached for its sequence (causal, bottom-right aligned).
The caller describes the step's batch with `prepare(...)` before the forward and calls
`advance()` after it. The engine's paged cache (infer/) implements the same protocol; this one
serves tests and simple decoding (one slot per sequence, `max_len` slots each).
"""
from __future__ import annotations

import torch

from s1.model.config import Qwen2Config


class ContiguousKVCache:
    def __init__(self, cfg: Qwen2Config, num_slots: int, max_len: int,
                 device="cpu", dtype: torch.dtype | None = None):
        dtype = dtype or cfg.dtype
        shape = (cfg.num_hidden_layers, num_slots, max_len, cfg.num_key_value_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * num_slots
        self.max_len = max_len
        self._step = None

    def prepare(self, slots: list[int], num_new: list[int]) -> torch.Tensor:
        """Declare this step's batch: packed tokens are num_new[i] tokens of slots[i], in order.

        Returns the [T] positions of those tokens (continuing each slot's cached length).
        """
        if len(slots) != len(num_new):
            raise ValueError("slots and num_new must have the same length")
        pos, cu_q, cu_k = [], [0], [0]
        for s, n in zip(slots, num_new):
            start = self.lengths[s]
            if start + n > self.max_len:
                raise ValueError(f"slot {s}: {start + n} tokens exceed the cache length {self.max_len}")
            pos.extend(range(start, start + n))
            cu_q.append(cu_q[-1] + n)
            cu_k.append(cu_k[-1] + start + n)
        dev = self.k.device
        self._step = dict(slots=list(slots), num_new=list(num_new),
                          cu_q=torch.tensor(cu_q, dtype=torch.int32, device=dev),
                          cu_k=torch.tensor(cu_k, dtype=torch.int32, device=dev),
                          max_q=max(num_new), max_k=max(self.lengths[s] + n for s, n in zip(slots, num_new)))
        return torch.tensor(pos, dtype=torch.long, device=dev)

    def attend(self, layer_idx: int, q, k, v, scale: float, ops):
        st = self._step
        if st is None:
            raise RuntimeError("ContiguousKVCache.attend called before prepare()")
        ks, vs, off = [], [], 0
        for s, n in zip(st["slots"], st["num_new"]):
            start = self.lengths[s]
            self.k[layer_idx, s, start:start + n] = k[off:off + n]
            self.v[layer_idx, s, start:start + n] = v[off:off + n]
            ks.append(self.k[layer_idx, s, :start + n])
            vs.append(self.v[layer_idx, s, :start + n])
            off += n
        return ops.attention(q, torch.cat(ks), torch.cat(vs), st["cu_q"], st["cu_k"],
                             st["max_q"], st["max_k"], scale, True)

    def advance(self) -> None:
        for s, n in zip(self._step["slots"], self._step["num_new"]):
            self.lengths[s] += n
        self._step = None

    def reset(self, slot: int) -> None:
        self.lengths[slot] = 0
