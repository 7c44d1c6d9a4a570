"""Kernels and the one backend switch.

Every op exists twice with one signature: `s1.kernels.reference` (plain PyTorch, HF numerics) and
`s1.kernels.triton_ops` (Triton). The model resolves `get_ops(device)` once per forward (or uses the
namespace its caller passes: the inference engine decides once, at construction) and never
branches on the backend itself.

Choice, in order: `set_backend(...)` / `use_backend(...)` if called, else the environment
variable S1_KERNELS (auto | torch | triton), else auto = Triton on CUDA, PyTorch on CPU.
"triton" on a CPU tensor runs the kernels in the Triton interpreter (TRITON_INTERPRET=1).
"""
from __future__ import annotations

import contextlib
import os
from types import ModuleType

from s1.kernels import reference

_BACKENDS = ("auto", "torch", "triton")
_override: str | None = None


def _triton_ops() -> ModuleType:
    from s1.kernels import triton_ops  # imported lazily: Triton is only needed when used
    return triton_ops


def backend_name(device, backend: str | None = None) -> str:
    name = backend or _override or os.environ.get("S1_KERNELS", "auto")
    if name not in _BACKENDS:
        raise ValueError(f"S1_KERNELS={name!r}: expected one of {_BACKENDS}")
    if name == "auto":
        dev_type = device.type if hasattr(device, "type") else str(device)
        name = "triton" if dev_type == "cuda" else "torch"
    return name


def get_ops(device, backend: str | None = None) -> ModuleType:
    """The op namespace for `device` (rms_norm, rope, swiglu, attention, linear_cross_entropy;
    kv_store, paged_attention, gumbel_argmax, sample_and_force, filtered_choices). `backend`
    (auto | torch | triton) overrides the switch for this call; the engine decides once."""
    return _triton_ops() if backend_name(device, backend) == "triton" else reference


def set_backend(name: str | None) -> None:
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}: expected one of {_BACKENDS}")
    global _override
    _override = name


@contextlib.contextmanager
def use_backend(name: str):
    global _override
    old = _override
    set_backend(name)
    try:
        yield
    finally:
        _override = old
