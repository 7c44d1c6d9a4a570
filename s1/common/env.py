"""The record that goes next to every benchmark number: device, commit, versions, date.

`dirty` is True when the working tree is not the recorded commit: a tracked file differs from
HEAD (staged or not), or an untracked, non-ignored file exists in one of the code folders
(CODE_DIRS) -- a result produced by new, never-committed code must not pass for a clean commit.
Benchmark outputs (bench/results/) are not code and do not count. `dirty_paths` lists the
offending paths (git's two-letter status, then the path), at most MAX_DIRTY_PATHS of them.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # s1/common/env.py -> the checkout
CODE_DIRS = ("s1", "bench", "tests", "setup.py")
NOT_CODE = ("bench/results/",)
MAX_DIRTY_PATHS = 20


def git_state(root: str | os.PathLike | None = None) -> tuple[str | None, bool | None, list[str] | None]:
    """(short commit, dirty, dirty_paths) of the git work tree at root (default: this repo);
    (None, None, None) when git or the repository is unavailable."""
    root = os.fspath(root if root is not None else os.environ.get("S1_REPO_ROOT", REPO_ROOT))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        # -z: NUL-separated, paths unquoted; renames/copies carry a second (source) path entry
        out = subprocess.run(["git", "-C", root, "status", "--porcelain=v1", "-z", "--untracked-files=all"],
                             capture_output=True, text=True, check=True).stdout
    except Exception:
        return None, None, None
    entries = out.split("\0")
    paths = []
    i = 0
    while i < len(entries):
        e = entries[i]
        i += 1
        if len(e) < 4:
            continue
        code, path = e[:2], e[3:]
        if code[0] in "RC":
            i += 1  # skip the rename/copy source path
        if path.startswith(NOT_CODE):
            continue
        if code == "??" and path.split("/", 1)[0] not in CODE_DIRS:
            continue  # untracked files only matter inside the code folders
        if code == "!!":
            continue
        paths.append(f"{code.strip()} {path}")
    short = paths[:MAX_DIRTY_PATHS]
    if len(paths) > MAX_DIRTY_PATHS:
        short.append(f"... (+{len(paths) - MAX_DIRTY_PATHS} more)")
    return commit, bool(paths), short


def environment(root: str | os.PathLike | None = None) -> dict:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # triton is optional on CPU
        triton_version = None
    commit, dirty, dirty_paths = git_state(root)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {
        "device": device,
        "commit": commit,
        "dirty": dirty,
        "dirty_paths": dirty_paths,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
