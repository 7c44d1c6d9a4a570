"""SFT trainer: s1's recipe on FSDP2. `train(TrainConfig)` in-process, `s1 train` /
`torchrun -m s1.train` from the shell. The names below load lazily, so `s1 train --help` (which
imports s1.train.cli) does not import torch."""
from __future__ import annotations

import importlib

_EXPORTS = {"TrainConfig": "s1.train.loop", "TrainingDiverged": "s1.train.loop", "train": "s1.train.loop"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's1.train' has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainingDiverged", "train"]
