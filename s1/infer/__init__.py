"""The inference engine: paged KV cache, continuous batching, budget forcing on the device.

Public API: `LLM`, `SamplingParams`, `GenerationOutput`. Imported lazily, so that
`import s1.infer.sampling` (or a package above this one that only needs the parameter class) does
not load torch and the model code.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"LLM": "s1.infer.llm", "SamplingParams": "s1.infer.sampling", "GenerationOutput": "s1.infer.request"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's1.infer' has no attribute {name!r}")
