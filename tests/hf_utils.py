"""Helpers that build small random Qwen2 / Qwen3 models with HF transformers (the test-time oracle)."""
from __future__ import annotations

import torch

from s1.model.config import Qwen2Config


def hf_config(**kw):
    import transformers
    base = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=192,
                num_hidden_layers=2, vocab_size=512, tie_word_embeddings=True, rope_theta=1e6,
                rms_norm_eps=1e-6, max_position_embeddings=1024)
    base.update(kw)
    return transformers.Qwen2Config(**base)


def _randomize(model, std: float):
    """Norm weights around 1 (1 + 0.1 N(0, 1)), every other parameter N(0, std); in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model


def random_hf_model(seed: int = 0, std: float = 0.05, **kw):
    """A transformers Qwen2ForCausalLM with random weights (biases and norms randomized too)."""
    import transformers
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(hf_config(**kw)).float().eval()
    return _randomize(model, std)


def random_hf_qwen3(seed: int = 0, std: float = 0.05, **kw):
    """A transformers Qwen3ForCausalLM with random weights (q/k norms and layer norms randomized
    too). Defaults: hidden 64, 4 / 2 heads of head_dim 32 (heads * head_dim = 128 != hidden)."""
    import transformers
    base = dict(hidden_size=64, head_dim=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                num_hidden_layers=2, vocab_size=512, tie_word_embeddings=True, rope_theta=1e6,
                rms_norm_eps=1e-6, max_position_embeddings=1024)
    base.update(kw)
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**base)).float().eval()
    return _randomize(model, std)


def our_config_from_hf(hf_model) -> Qwen2Config:
    return Qwen2Config.from_dict(hf_model.config.to_dict())
