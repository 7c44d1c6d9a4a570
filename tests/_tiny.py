"""A tiny random-weight checkpoint for CLI tests: Qwen2 architecture, hidden 32, the real Qwen2.5
tokenizer and chat template (from ../shared/data), written by the library's random-checkpoint
writer (s1.model.loading.save_random_checkpoint; no transformers)."""
from __future__ import annotations

import json
import os


def make_tiny_checkpoint(path, tok_dir, seed: int = 0, max_positions: int = 2048) -> str:
    from s1.model.loading import save_random_checkpoint
    return save_random_checkpoint(path, "smoke", tokenizer_dir=tok_dir, seed=seed, std=0.05, hidden_size=32,
                                  intermediate_size=64, max_position_embeddings=max_positions,
                                  torch_dtype="float32")


def write_s1k_rows(path, n: int = 4) -> str:
    """A few s1K-format rows (question, thinking_trajectories, attempt)."""
    rows = [{"question": f"What is {i} + {i}?", "thinking_trajectories": [f"{i} plus {i} is {2 * i}."],
             "attempt": f"The answer is {2 * i}."} for i in range(n)]
    with open(path, "w") as f:
        json.dump(rows, f)
    return os.fspath(path)
