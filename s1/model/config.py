"""Qwen2 / Qwen2.5 and Qwen3 (dense) configuration with exactly the field names of HF `config.json`.

One config class and one model for both families (`model_type` "qwen2" or "qwen3"); what differs is
decided here, once, from the checkpoint's fields: Qwen2 has q/k/v biases and head_dim = hidden /
heads when absent; Qwen3 has no biases (`attention_bias` false), a per-head RMSNorm of q and k
before RoPE (`qk_norm`), and an explicit head_dim (128 when absent, as transformers' Qwen3Config).

Only architecture lives here; run settings (learning rate, budgets, ...) belong to their stages.
Both the transformers-4 spelling (`rope_theta`, `torch_dtype`) and the transformers-5 spelling
(`rope_parameters`, `dtype`) are read; we write the v4 spelling, which both versions load. Where a
file has both, the v5 one wins, as in transformers 5. (A config with no RoPE base at all gets our
default, 1e6, the Qwen2.5 checkpoints' value; transformers would use 10,000. Files written by
transformers or by us always carry one.)
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from s1.common import dtypes



class ConfigError(ValueError):
    pass


# model_type -> the HF architecture name written to config.json
FAMILIES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


@dataclass
class Qwen2Config:
    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    head_dim: int | None = None  # absent: hidden_size // num_attention_heads (qwen2), 128 (qwen3)
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"
    attention_dropout: float = 0.0
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    model_type: str = "qwen2"
    # qwen2: q/k/v biases always (absent from its config.json); qwen3: the config's attention_bias,
    # false in every published checkpoint (and required: a biased Qwen3 also biases o_proj).
    attention_bias: bool | None = None
    architectures: list | None = None  # absent: [Qwen2ForCausalLM] / [Qwen3ForCausalLM]
    extra: dict = field(default_factory=dict, repr=False)  # unknown keys, kept for round trips

    def __post_init__(self):
        def need(cond, fld, msg):
            if not cond:
                raise ConfigError(f"config field {fld!r}: {msg} (got {getattr(self, fld)!r})")

        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            v = getattr(self, f)
            need(isinstance(v, int) and not isinstance(v, bool) and v > 0, f, "must be a positive integer")
        need(self.num_attention_heads % self.num_key_value_heads == 0, "num_key_value_heads",
             f"must divide num_attention_heads={self.num_attention_heads}")
        need(self.model_type in FAMILIES, "model_type",
             f"only {' and '.join(repr(m) for m in FAMILIES)} checkpoints are supported")
        if self.architectures is None:
            self.architectures = [FAMILIES[self.model_type]]
        if self.attention_bias is None:
            self.attention_bias = self.model_type == "qwen2"
        need(self.attention_bias == (self.model_type == "qwen2"), "attention_bias",
             "Qwen2 always has q/k/v biases; Qwen3 with attention_bias=true (biases on q/k/v and o_proj) "
             "is not supported (no published Qwen3 checkpoint has them)")
        if self.head_dim is None and self.model_type == "qwen3":
            self.head_dim = 128  # transformers' Qwen3Config default
        if self.head_dim is None:
            need(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                 f"must be divisible by num_attention_heads={self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        need(self.head_dim % 2 == 0 and self.head_dim > 0, "head_dim", "must be positive and even for RoPE")
        need(self.hidden_act == "silu", "hidden_act", "only 'silu' (SwiGLU) is supported")
        need(self.rms_norm_eps > 0, "rms_norm_eps", "must be > 0")
        need(self.rope_theta > 0, "rope_theta", "must be > 0")
        need(self.rope_scaling is None or self.rope_scaling.get("rope_type", self.rope_scaling.get("type")) == "default",
             "rope_scaling", "only default RoPE is supported (no Qwen2.5 checkpoint uses scaling)")
        need(self.torch_dtype in dtypes.NAMES, "torch_dtype", f"must be one of {sorted(dtypes.NAMES)}")
        need(not self.use_sliding_window, "use_sliding_window", "sliding-window attention is not supported")

    # ---------------------------------------------------------------- derived
    @property
    def dtype(self) -> torch.dtype:
        return dtypes.to_torch(self.torch_dtype)

    @property
    def qk_norm(self) -> bool:
        """Per-head RMSNorm (weights [head_dim]) of q and k before RoPE: Qwen3."""
        return self.model_type == "qwen3"

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def num_params(self, include_embedding: bool = True) -> int:
        h, i, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        attn = h * self.q_size + 2 * h * self.kv_size + self.q_size * h
        if self.attention_bias:
            attn += self.q_size + 2 * self.kv_size
        if self.qk_norm:
            attn += 2 * self.head_dim
        per_layer = attn + 3 * h * i + 2 * h
        n = L * per_layer + h
        if include_embedding:
            n += self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return n

    # ---------------------------------------------------------------- io
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Qwen2Config":
        """A config from config.json's fields, in either transformers spelling. Where both are
        present the transformers-5 one wins, as transformers 5 reads them: rope_parameters'
        rope_theta over a top-level rope_theta, dtype over torch_dtype."""
        d = dict(d)
        rp = d.pop("rope_parameters", None)
        if rp is not None:
            if "rope_theta" in rp:
                d["rope_theta"] = rp["rope_theta"]
            if rp.get("rope_type", rp.get("type", "default")) != "default" and d.get("rope_scaling") is None:
                d["rope_scaling"] = rp   # refused in __post_init__ (only default RoPE is supported)
        if d.get("dtype") is not None:
            d["torch_dtype"] = d["dtype"]
        d.pop("dtype", None)
        if isinstance(d.get("torch_dtype"), str) and d["torch_dtype"].startswith("torch."):
            d["torch_dtype"] = d["torch_dtype"][len("torch."):]
        if d.get("torch_dtype") is None:
            d["torch_dtype"] = "bfloat16"
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        extra.pop("layer_types", None)  # derivable (all full attention)
        return cls(**known, extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Qwen2Config":
        path = os.fspath(path)
        f = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.exists(f):
            raise FileNotFoundError(f"no config.json in {path!r}: not a Hugging Face checkpoint directory")
        try:
            with open(f) as fh:
                d = json.load(fh)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{f}: invalid JSON ({e})") from e
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if self.model_type == "qwen2":
            del d["attention_bias"]  # not a Qwen2 config field: implied (always biased)
        d.update(self.extra)
        return d

    def save_pretrained(self, path: str | os.PathLike) -> None:
        d = self.to_dict()
        if d["max_window_layers"] is None:
            # transformers 5 refuses null here (an int field); without sliding windows it means nothing
            d["max_window_layers"] = self.num_hidden_layers
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as fh:
            json.dump(d, fh, indent=2, sort_keys=True)


# Qwen2.5 and Qwen3 model shapes (the published config.json files). Random-weight models of
# these shapes serve the benchmarks; real checkpoints carry their own config.json. "smoke" is a
# tiny stand-in with the real vocabulary, for CPU smoke runs of the same scripts.
SHAPES: dict[str, dict[str, Any]] = {
    "0.5B": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "3B": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
               intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True),
    "7B": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "14B": dict(hidden_size=5120, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                intermediate_size=13824, vocab_size=152064, tie_word_embeddings=False),
    "32B": dict(hidden_size=5120, num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                intermediate_size=27648, vocab_size=152064, tie_word_embeddings=False),
    "smoke": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=151936, tie_word_embeddings=True),
    # Qwen3 dense (the published config.json files: head_dim 128 everywhere, so heads * head_dim
    # differs from hidden_size for 0.6B, 4B, 32B; 40,960 positions; vocabulary 151,936).
    **{f"qwen3-{name}": dict(model_type="qwen3", head_dim=128, hidden_size=h, num_hidden_layers=L,
                             num_attention_heads=hq, num_key_value_heads=8, intermediate_size=i,
                             vocab_size=151936, tie_word_embeddings=tied, rope_theta=1e6,
                             max_position_embeddings=40960)
       for name, h, L, hq, i, tied in [("0.6B", 1024, 28, 16, 3072, True),
                                       ("1.7B", 2048, 28, 16, 6144, True),
                                       ("4B", 2560, 36, 32, 9728, True),
                                       ("8B", 4096, 36, 32, 12288, False),
                                       ("14B", 5120, 40, 40, 17408, False),
                                       ("32B", 5120, 64, 64, 25600, False)]},
    # the CPU stand-in: real vocabulary, head_dim 32 != hidden / heads = 16
    "qwen3-smoke": dict(model_type="qwen3", head_dim=32, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                        vocab_size=151936, tie_word_embeddings=True),
}


def shape_config(name: str, **overrides) -> Qwen2Config:
    """A Qwen2Config of a named shape (SHAPES), instruct-checkpoint defaults (rms_norm_eps 1e-6,
    rope_theta 1e6, 32K positions (Qwen3: its own 40K), bf16), with any field overridden."""
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}: one of {', '.join(SHAPES)}")
    d = dict(rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768, torch_dtype="bfloat16")
    d.update(SHAPES[name])
    d.update(overrides)
    return Qwen2Config(**d)
