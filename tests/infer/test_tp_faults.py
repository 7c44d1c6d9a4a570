"""Tensor parallel under faults (issue 24, point 9): an exception other than a failed collective on
one rank -- a bug, or Ctrl-C reaching one process -- stops every rank within seconds (not after
the process-group timeout, 60 s here), and the peers' TPError names the failing rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(mode: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(ROOT, "tests", "infer", "tp_fault_worker.py"), mode]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    res = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            res[r["rank"]] = r
    assert set(res) == {0, 1}, (p.stdout[-2000:], p.stderr[-3000:])
    return res


@pytest.mark.parametrize("mode", ["error", "interrupt"])
def test_an_exception_on_one_rank_stops_every_rank_within_seconds(mode):
    res = _run(mode)
    r0, r1 = res[0], res[1]
    assert r1["raised"] == ("TPError" if mode == "error" else "KeyboardInterrupt"), r1
    if mode == "error":
        assert "rank 1 of 2" in r1["message"] and "ValueError" in r1["message"], r1
    assert r0["raised"] == "TPError", r0
    assert "rank 1 raised" in r0["message"] and "rank 0 of 2" in r0["message"], r0
    assert r0["at"] - r1["failed_at"] < 10, (r0, r1)          # the group timeout is 60 s
    for r in (r0, r1):                                          # a shut-down group runs no more steps
        assert "was shut down" in r["after"], r
    print(f"\n{mode}: rank 0 stopped {r0['at'] - r1['failed_at']:.2f} s after rank 1 failed: {r0['message'][:200]}")
