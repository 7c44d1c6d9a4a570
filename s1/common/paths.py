"""Where the project finds its reference data (the Qwen2.5 tokenizer, evaluation sets, question pool).

`shared_data_dir()`: $S1_SHARED_DATA, else `../shared/data` beside the repository.
`eval_data_dir()`: $S1_EVAL_DATA, else `<shared data>/eval`.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]   # s1/common/paths.py -> the checkout


def shared_data_dir() -> Path:
    env = os.environ.get("S1_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def eval_data_dir() -> Path:
    env = os.environ.get("S1_EVAL_DATA")
    return Path(env) if env else shared_data_dir() / "eval"
