"""CPU thread policy of every command: how many intra-op threads torch may use.

torch's default is one thread per physical core. For the small matrices of a tiny model that
buys little on a quiet machine and costs a lot on a busy one: each op ends in a barrier that
waits for the slowest thread, and a thread that lost its core to another process stalls them all
(`s1 demo --quick` was measured at 1,051 s with torch's 2 threads on 2 busy cores, 109 s with
one; bench/NOTES.md). So:

1. an explicit count wins: the command's `--threads N`;
2. else the environment variable S1_THREADS=N;
3. else, on CPU, tiny work (a model under TINY_PARAMS parameters, or work_hint="tiny") runs on
   one thread;
4. else torch's default (large models on CPU, and any GPU run: there the CPU only feeds the GPU).

`configure_threads(n, work_hint=..., device=...)` applies the policy and returns the count in
effect; `choose_threads` is the pure decision (no torch import), `estimate_params` sizes a model
from its config.json fields, `add_threads_argument` gives a parser the common `--threads` flag.
"""
from __future__ import annotations

import os

ENV_VAR = "S1_THREADS"
TINY_PARAMS = 50_000_000   # below this a model's per-op work is too small for threads to pay off


def _positive_int(value, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{what}: expected a positive integer number of threads, got {value!r}")
    return n


def estimate_params(cfg: dict) -> int:
    """Parameter count of a Qwen2-architecture model from its config.json fields (HF names)."""
    h, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads) * int(cfg.get("head_dim") or h // heads)
    inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
    per_layer = (h * (h + 2 * kv) + (h + 2 * kv)) + h * h + 3 * h * inter + 2 * h
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return emb + layers * per_layer + h


def is_tiny(work_hint) -> bool | None:
    """True / False for a known size, None when the hint says nothing."""
    if work_hint is None:
        return None
    if isinstance(work_hint, str):
        if work_hint not in ("tiny", "large"):
            raise ValueError(f"work_hint {work_hint!r}: expected 'tiny', 'large', a parameter count or a config dict")
        return work_hint == "tiny"
    if isinstance(work_hint, dict):
        try:
            work_hint = estimate_params(work_hint)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
    return int(work_hint) < TINY_PARAMS


def choose_threads(n: int | None = None, work_hint=None, device: str | None = "cpu",
                   environ=None) -> int | None:
    """The thread count the policy picks, or None for torch's default. Raises ValueError (naming
    --threads or S1_THREADS) on a count that is not a positive integer."""
    if n is not None:
        return _positive_int(n, "--threads")
    env = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if env:
        return _positive_int(env, ENV_VAR)
    if device is not None and not str(device).startswith("cpu"):
        return None
    return 1 if is_tiny(work_hint) else None


def configure_threads(n: int | None = None, work_hint=None, device: str | None = "cpu") -> int:
    """Apply the policy to torch (imported here); returns the intra-op thread count in effect."""
    chosen = choose_threads(n, work_hint, device)
    import torch
    if chosen is not None and chosen != torch.get_num_threads():
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


def add_threads_argument(parser, default_doc: str = "1 for a model under 50M parameters on CPU, "
                         "else torch's default") -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads for torch (env {ENV_VAR}; default: {default_doc})")
