"""Small helpers shared by the Triton kernel files (no kernels here)."""
from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def check_device(op: str, *tensors: torch.Tensor) -> None:
    """All tensors on one device; CPU tensors only under the interpreter (clear error otherwise)."""
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise ValueError(f"{op}: tensors on different devices ({dev} vs {t.device})")
    if dev.type != "cuda" and not interpreting():
        raise RuntimeError(f"{op}: Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 set before "
                           f"triton is imported to run them on {dev} (got a {dev} tensor)")
