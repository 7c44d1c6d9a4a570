"""Shared helpers for the trainer tests (no tests here): a tiny model config, s1K-style rows, the
run configuration of the resume / checkpoint tests and how they compare runs."""
from __future__ import annotations

import json
import random

import torch

from s1.train import TrainConfig

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


def train_config(tmp, tok_dir, name, rows, **kw):
    base = dict(data=rows, out=str(tmp / name), init_config=dict(TINY), tokenizer=str(tok_dir),
                block_size=512, global_batch_size=4, micro_batch_size=1, epochs=2, lr=1e-3,
                warmup_ratio=0.2, seed=3, progress=False, loss_weighting="token")
    base.update(kw)
    return TrainConfig(**base)


def metrics_curve(path):
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"], r["trained_tokens"]) for r in read_jsonl(path)]


RESUME_ROWS = dict(n=9, seed=1)  # 9 rows / batch 4: the last step of each epoch is short
RESUME_KW = dict(micro_batch_size=2)  # 2 micro-batches of 2 per step: gradient accumulation


def same_export(a_dir, b_dir):
    from safetensors.torch import load_file
    a = load_file(str(a_dir / "model.safetensors"))
    b = load_file(str(b_dir / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
