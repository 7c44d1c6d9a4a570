"""Shared helpers for the trainer tests (no tests here): a tiny model config and s1K-style rows."""
from __future__ import annotations

import json
import random

# Tiny Qwen2 with the real vocabulary (the real tokenizer's ids reach 151,664): ~9.8M parameters,
# almost all of them the tied embedding. fp32 so CPU runs are exact and comparable.
TINY = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
            torch_dtype="float32", max_position_embeddings=1024, rms_norm_eps=1e-6)


def digit_rows(n: int, seed: int = 0, list_traces: bool = True) -> list[dict]:
    """s1K-format rows for a running digit-sum-mod-10 task (the demo task of s1/pipelines/toy.py)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = [rng.randint(0, 9) for _ in range(rng.randint(3, 10))]
        s, steps = 0, []
        for d in digits:
            s = (s + d) % 10
            steps.append(str(s))
        trace = " ".join(steps)
        rows.append({"question": "Running digit sum mod 10 of " + " ".join(map(str, digits)),
                     "thinking_trajectories": [trace] if list_traces else trace,
                     "attempt": str(s), "solution": str(s)})
    return rows


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
