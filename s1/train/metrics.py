"""Training FLOPs, MFU and the JSONL metrics log.

Model FLOPs per training step (PaLM appendix B convention, as torchtitan): forward + backward =
3x forward, and a forward costs 2 FLOPs per multiply-add, so
  dense:      6 * N_dense * tokens, N_dense = all matmul weights, including the lm_head (which is
              the embedding matrix again when tied) but not the embedding lookup
  attention:  per layer and sequence of length s, QK^T and PV are 2 * 2 * s^2 * H_q * d forward;
              causal attention does half of it -> 3 * 2 * s^2 * H_q * d = 6 * s^2 * H_q * d per layer
Activation-checkpoint recomputation is not counted (MFU, not hardware FLOPs utilization).
"""
from __future__ import annotations

import json
import math
import os

import torch

from s1.model.config import Qwen2Config

# Dense bf16 peak (no sparsity), per GPU, from the vendors' datasheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
                    "L40S": 362.0, "B200": 2250.0}


def dense_params(cfg: Qwen2Config) -> int:
    """Parameters that take part in matmuls: everything but the embedding lookup and norms/bias
    (whose FLOPs are negligible), with the lm_head counted even when tied."""
    h, L = cfg.hidden_size, cfg.num_hidden_layers
    attn = h * cfg.q_size + 2 * h * cfg.kv_size + cfg.q_size * h
    mlp = 3 * h * cfg.intermediate_size
    return L * (attn + mlp) + cfg.vocab_size * h


def train_flops(cfg: Qwen2Config, seq_lens) -> float:
    """Model FLOPs of one forward + backward over sequences of the given lengths."""
    seq_lens = list(seq_lens)
    tokens = sum(seq_lens)
    attn = sum(6.0 * s * s * cfg.num_attention_heads * cfg.head_dim for s in seq_lens) * cfg.num_hidden_layers
    return 6.0 * dense_params(cfg) * tokens + attn


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device, or None when unknown (CPU): MFU is then not reported."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tf * 1e12
    return None


class MetricsLog:
    """Append-only JSONL, one object per step, written by rank 0 and flushed every line."""

    def __init__(self, path: str | None, enabled: bool = True):
        self.path = path
        self.f = None
        if path and enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.f = open(path, "a")

    def write(self, rec: dict) -> None:
        if self.f is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
            self.f.write(json.dumps(clean) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
