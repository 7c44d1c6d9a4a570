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
CHOICES = NAMES + ("auto",)   # for argparse: `type=arg_type(), metavar="{" + ",".join(CHOICES) + "}"`


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


def arg_type(allow_auto: bool = True):
    """An argparse `type=`: normalizes the name, and a bad one is an error naming the accepted ones."""
    import argparse

    def parse(v: str) -> str:
        try:
            return canonical(v, allow_auto=allow_auto)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = "dtype"
    return parse


def to_torch(name: str):
    import torch
    return getattr(torch, canonical(name))


def name_of(dtype) -> str:
    """torch.bfloat16 -> 'bfloat16'."""
    return str(dtype).removeprefix("torch.")
