"""The record that goes next to every benchmark number: device, commit, versions, date."""
from __future__ import annotations

import datetime
import platform
import subprocess


def environment() -> dict:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # triton is optional on CPU
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
    except Exception:
        commit, dirty = None, None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)"
    return {
        "device": device,
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
