"""What the engine's front ends share when they turn flags into an engine: `s1 generate`
(s1/infer/cli.py) and `s1 serve` (s1/serve/cli.py).

    resolve_inputs(model, tokenizer)  --model / --tokenizer -> folders + config.json, checked
    resolve_device(name)              --device auto|cpu|cuda[:N] -> a device this machine has
    request_seed(seed, i)             request i's seed under --seed (or a request's "seed" field)
    UsageError                        a bad flag value or path; the message names the flag

Pure Python at import (torch loads inside `resolve_device` only), so `--help` stays fast.
"""
from __future__ import annotations

import hashlib
import json
import os


class UsageError(ValueError):
    """A bad flag value or path: the message names the flag."""


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` under --seed `seed`: a hash, so neighbouring requests (and
    neighbouring --seed values) get unrelated noise streams."""
    h = hashlib.sha256(f"s1-generate|{seed}|{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2          # < 2**62, the engine's seed range


def resolve_inputs(model: str, tokenizer: str | None = None) -> tuple[str, str, dict]:
    """(model folder, tokenizer folder, config.json dict) from --model and --tokenizer (each a
    folder or a cached Hub id; the tokenizer defaults to the model's folder); UsageError naming
    --model / --tokenizer."""
    from s1.common.hub import ModelNotFound, resolve_model_path
    try:
        model_dir = resolve_model_path(model, "--model")
        tok_dir = resolve_model_path(tokenizer, "--tokenizer") if tokenizer else model_dir
    except ModelNotFound as e:
        raise UsageError(str(e)) from None
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise UsageError(f"--model {model}: no config.json in {model_dir} (not an HF-format checkpoint)")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--model {model}: unreadable config.json ({e})") from None
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        if tokenizer:
            raise UsageError(f"--tokenizer {tokenizer}: no tokenizer.json in {tok_dir}")
        raise UsageError(f"--model {model}: no tokenizer.json in {model_dir}; pass --tokenizer DIR "
                         f"(a folder with the model's tokenizer.json, e.g. the base model's)")
    return model_dir, tok_dir, cfg


def resolve_device(name: str) -> str:
    """'auto' -> cuda/cpu; a CUDA device on a build or machine without one -> UsageError."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise UsageError(f"--device {name}: this torch build ({torch.__version__}) has no CUDA support; "
                             f"use --device cpu or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is visible "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {name}: the engine runs on cpu or cuda")
    return name
