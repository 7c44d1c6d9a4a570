"""Worker of tests/test_tp_faults.py, run under `torchrun --nproc-per-node 2` (gloo, CPU): both ranks
join a TP group with a 60 s timeout and all-gather inside `TPGroup.guard`; rank 1 then raises
ValueError inside its guard (a bug on one rank), rank 0 enters its next collective. Each rank
prints one JSON line: what it raised and when (time.time())."""
from __future__ import annotations

import json
import os
import sys
import time

import torch


def main() -> None:
    from s1.infer.tensor_parallel import TPError, init_tensor_parallel
    mode = sys.argv[1] if len(sys.argv) > 1 else "error"
    tp = init_tensor_parallel(2, backend="gloo", timeout_s=60)
    with tp.guard("engine step 1"):
        tp.all_gather(torch.ones(2))
    res = {"rank": tp.rank}
    try:
        with tp.guard("engine step 2"):
            if tp.rank == 1:
                time.sleep(0.5)
                res["failed_at"] = time.time()
                if mode == "interrupt":
                    raise KeyboardInterrupt
                raise ValueError("injected bug on rank 1")
            tp.all_gather(torch.ones(2))
        res["raised"] = None
    except (TPError, KeyboardInterrupt) as e:
        res.update(raised=type(e).__name__, message=str(e), at=time.time())
    try:                                        # the engine refuses to step on a shut-down group
        with tp.guard("engine step 3"):
            tp.all_gather(torch.ones(2))
        res["after"] = "ran"
    except TPError as e:
        res["after"] = str(e)
    print("RESULT " + json.dumps(res), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
