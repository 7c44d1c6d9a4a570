"""The one dtype vocabulary of every command and config: canonical names are torch's
("float32", "bfloat16", "float16", as HF's config.json writes `torch_dtype`); the short spellings
fp32 / bf16 / fp16 and "torch.bfloat16" are accepted and normalized. "auto" (where a command allows
it) means: the checkpoint's own dtype for inference, bf16 on CUDA / fp32 on CPU for training.

`canonical(name)` checks and normalizes a name without importing torch (fast CLI parsing);
`to_torch(name)` returns the torch dtype.
"""
from __future__ import annotations

NAMES = ("float32", "bfloat16", "float16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
CHOICES = NAMES + ("auto",)   # for argparse: `choices=CHOICES, type=canonical_or_auto`


def canonical(name: str, allow_auto: bool = False) -> str:
    """'bf16' -> 'bfloat16'; ValueError naming the accepted spellings for anything else."""
    if not isinstance(name, str):
        raise ValueError(f"dtype {name!r}: expected a name such as bfloat16")
    n = name.strip().lower().removeprefix("torch.")
    n = ALIASES.get(n, n)
    if n in NAMES or (allow_auto and n == "auto"):
        return n
    accepted = ", ".join(NAMES + (("auto",) if allow_auto else ()))
    raise ValueError(f"unknown dtype {name!r}: use one of {accepted} (or fp32, bf16, fp16)")


def canonical_or_auto(name: str) -> str:
    return canonical(name, allow_auto=True)


def to_torch(name: str):
    import torch
    return getattr(torch, canonical(name))


def name_of(dtype) -> str:
    """torch.bfloat16 -> 'bfloat16'."""
    return str(dtype).removeprefix("torch.")
