"""Benchmark scripts (`s1 bench NAME` or `python -m bench.NAME`); results in bench/results/."""
from __future__ import annotations

import os
import subprocess
import tempfile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def is_recorded(path: str) -> bool:
    """Whether `path` is a recorded result: a file git tracks, or (without git) one that exists
    under bench/results/."""
    p = os.path.abspath(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        r = subprocess.run(["git", "-C", root, "ls-files", "--error-unmatch", p], capture_output=True, timeout=30)
        if r.returncode in (0, 1) and (r.returncode == 0 or b"did not match" in r.stderr):
            return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.exists(p) and p.startswith(RESULTS + os.sep)


def smoke_output(name: str, out: str | None, suffixes: tuple[str, ...] = ("",)) -> str:
    """Where a --smoke run writes: `out` if given (refused when it would overwrite a recorded
    result: ValueError naming it), else a fresh temporary folder + `name`. Smoke numbers are not
    measurements, so they never replace the files in bench/results/; the caller prints the path."""
    if out is None:
        return os.path.join(tempfile.mkdtemp(prefix="s1_bench_smoke_"), name)
    hit = [out + s for s in suffixes if is_recorded(out + s)]
    if hit:
        raise ValueError(f"--smoke would overwrite the recorded result {', '.join(hit)}; smoke numbers are not "
                         "measurements: leave --out out (a temporary folder) or name another file")
    return out
