"""The Qwen2 / Qwen2.5 and Qwen3 (dense) decoder, single-device and flag-free.

The two families differ only in attention, and the difference is built into the modules at
construction from the config (s1/model/config.py), never tested at run time: Qwen2 has q/k/v biases
and `q_norm` / `k_norm` are `Identity` (no parameters); Qwen3 has no biases and per-head RMSNorms
(weights [head_dim]) of q and k before RoPE, through the same `ops.rms_norm` kernel.

Layout: tokens of all sequences are packed along one dimension ([T] ids, [T, hidden] states) with
`cu_seqlens` marking sequence boundaries (FlashAttention's varlen convention), so training with
packing, prefill of a batch of prompts and decoding all share one code path. Parameter names are
exactly HF's (`model.layers.3.self_attn.q_proj.weight`, ...), so HF checkpoints map one-to-one.

Hot ops go through `s1.kernels.get_ops(device)`: the PyTorch reference on CPU, Triton on CUDA.
Parallelism, activation checkpointing and compile are applied from outside (s1/train/parallelize.py).

KV cache protocol (decoding): each attention layer calls `kv_cache.attend(layer_idx, q, k, v, scale,
ops) -> out`, with q [T, Hq, D] and k, v [T, Hk, D] for the step's packed tokens; the cache stores
k, v and returns the attention of q over everything cached for each token's sequence (causal,
bottom-right aligned). The cache, not `cu_seqlens`, knows the step's batch layout: the engine's
paged cache (s1/infer/paged_cache.py) is filled by its runner before each forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from s1 import kernels
from s1.model.config import Qwen2Config


@dataclass
class AttnBatch:
    """Per-forward attention metadata for packed sequences without a KV cache."""
    cu_seqlens: torch.Tensor  # [B+1] int32
    max_seqlen: int


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x, ops):
        return ops.rms_norm(x, self.weight, self.eps)


class Identity(nn.Module):
    """Qwen2's q_norm / k_norm: none (no parameters, so the state dict is Qwen2's)."""

    def forward(self, x, ops):
        return x


class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.q_size, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.q_size, cfg.hidden_size, bias=False)
        norm = (lambda: RMSNorm(cfg.head_dim, cfg.rms_norm_eps)) if cfg.qk_norm else Identity
        self.q_norm, self.k_norm = norm(), norm()

    def forward(self, x, cos, sin, batch: AttnBatch | None, kv_cache, ops):
        T = x.shape[0]
        q = self.q_norm(self.q_proj(x).view(T, self.num_heads, self.head_dim), ops)
        k = self.k_norm(self.k_proj(x).view(T, self.num_kv_heads, self.head_dim), ops)
        v = self.v_proj(x).view(T, self.num_kv_heads, self.head_dim)
        q, k = ops.rope(q, k, cos, sin)
        if kv_cache is None:
            o = ops.attention(q, k, v, batch.cu_seqlens, batch.cu_seqlens,
                              batch.max_seqlen, batch.max_seqlen, self.scale, True)
        else:
            # The cache stores this step's k/v and attends over everything cached so far.
            o = kv_cache.attend(self.layer_idx, q, k, v, self.scale, ops)
        return self.o_proj(o.reshape(T, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x, ops):
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, batch: AttnBatch | None, kv_cache, ops):
        x = x + self.self_attn(self.input_layernorm(x, ops), cos, sin, batch, kv_cache, ops)
        return x + self.mlp(self.post_attention_layernorm(x, ops), ops)


class Qwen2Model(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin [T, head_dim] in fp32, computed as HF's default RoPE (fp32 inverse frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device)
                                .to(torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Per-token positions restarting at 0 for every packed sequence."""
    starts = cu_seqlens[:-1].long()
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq_start = torch.repeat_interleave(starts, lens, output_size=total)
    return torch.arange(total, device=cu_seqlens.device) - seq_start


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.model = Qwen2Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.weight
        return self.lm_head.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None, device=None) -> None:
        """HF's initialization: normal(0, initializer_range) for matrices, zero bias, unit norms.

        The numbers are drawn on `device` (default the CPU: a seed gives the same weights whatever
        device the model is on; a GPU draws a 7B model in about a second, other numbers)."""
        gen = torch.Generator(device=device or "cpu")
        if seed is not None:
            gen.manual_seed(seed)
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=gen.device) * std)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                kv_cache=None, labels: torch.Tensor | None = None,
                logits_indices: torch.Tensor | None = None, ops=None) -> torch.Tensor:
        """Run the decoder over packed tokens.

        input_ids: [T] packed tokens (or [B, S]: B unpadded sequences of equal length).
        positions: [T] RoPE positions; default restarts at 0 for every sequence in cu_seqlens.
        cu_seqlens: [B+1] int32 boundaries (default: one sequence). Not used with a kv_cache: the
            cache (the protocol above) carries the batch layout of the step (the engine's call is
            `model(input_ids, positions, kv_cache=cache, logits_indices=..., ops=...)`).
        labels: [T] targets (-100 = ignored) -> returns the *summed* token cross-entropy (fp32
            scalar) through the fused linear-cross-entropy op; logits are never materialized.
        logits_indices: [N] rows whose logits to return (e.g. each sequence's last token).
        ops: the kernel namespace (s1.kernels.get_ops); default: the switch's choice for the device,
            resolved once per forward. The engine passes the one it decided at construction.
        Returns logits [T or N, vocab] (model dtype), [B, S, vocab] for 2-D input, or the loss.
        """
        shape2d = input_ids.dim() == 2
        if shape2d:
            B, S = input_ids.shape
            input_ids = input_ids.reshape(-1)
            if cu_seqlens is None:
                cu_seqlens = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=input_ids.device)
                max_seqlen = S
            if labels is not None:
                labels = labels.reshape(-1)
        T = input_ids.shape[0]
        if kv_cache is not None:
            if positions is None:
                raise ValueError("positions are required when decoding with a KV cache")
            batch = None                    # the cache carries the step's layout
        else:
            if cu_seqlens is None:
                cu_seqlens = torch.tensor([0, T], dtype=torch.int32, device=input_ids.device)
                max_seqlen = T
            if positions is None:
                positions = packed_positions(cu_seqlens, T)
            if max_seqlen is None:
                max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
            batch = AttnBatch(cu_seqlens, max_seqlen)

        cfg = self.config
        ops = ops if ops is not None else kernels.get_ops(input_ids.device)
        h = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        for layer in self.model.layers:
            h = layer(h, cos, sin, batch, kv_cache, ops)
        h = self.model.norm(h, ops)
        if labels is not None:
            return ops.linear_cross_entropy(h, self.lm_head_weight, labels)
        if logits_indices is not None:
            h = h[logits_indices]
        logits = F.linear(h, self.lm_head_weight)
        return logits.view(B, S, -1) if shape2d and logits_indices is None else logits
