"""Peak host memory (RSS) of each trainer rank while loading a checkpoint into FSDP2 and while
exporting it (issue 27 part 8), 2 gloo ranks on CPU, for the current tree and for a git ref.

A random checkpoint of the 0.5B shape cut to a few layers (bf16 on disk) is written once; then,
for each tree, `torchrun --nproc-per-node 2` runs this file as a worker that calls the trainer's
own `build_model` (load + shard) and `checkpoint.export_hf` (gather + write), sampling every
rank's VmRSS every 5 ms; reported: each phase's peak above the rank's RSS before the phase.

    python -m bench.train_host_memory [--ref 183ad76] [--layers 4] [--out bench/results/train_host_memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    def __init__(self):
        self.peak, self.stop = _rss(), False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def phase(self, fn):
        base = _rss()
        self.peak = base
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        self.peak = max(self.peak, _rss())
        return {"rss_before": base, "peak": self.peak, "peak_above_before": self.peak - base, "seconds": dt}


def worker(ckpt: str, out: str, result: str) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from s1.model.config import Qwen2Config
    from s1.train import checkpoint as ck
    from s1.train.loop import TrainConfig, build_model
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mcfg = Qwen2Config.from_pretrained(ckpt)
    cfg = TrainConfig(data=[], out=out, model=ckpt, progress=False)
    s = Sampler()
    box = {}
    load = s.phase(lambda: box.setdefault("m", build_model(cfg, mcfg, torch.device("cpu"), rank, world,
                                                           torch.float32)))
    dist.barrier()
    export = s.phase(lambda: ck.export_hf(box["m"], mcfg, out, dtype=torch.bfloat16))
    rows = [None] * world
    dist.all_gather_object(rows, {"rank": rank, "load": load, "export": export})
    if rank == 0:
        with open(result, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tree(tree: str, ckpt: str, tmp: str, tag: str) -> list[dict]:
    result = os.path.join(tmp, f"{tag}.json")
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()),
           os.path.abspath(__file__), "--worker", ckpt, os.path.join(tmp, f"export_{tag}"), result]
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    with open(result) as f:
        return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="183ad76", help="git ref of the 'before' tree (default: before issue 27)")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers of the 0.5B shape")
    ap.add_argument("--out", default=os.path.join(HERE, "bench", "results", "train_host_memory.json"))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(*a.worker)
    sys.path.insert(0, HERE)
    from s1.model.loading import save_random_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_random_checkpoint(os.path.join(tmp, "ckpt"), "0.5B", num_hidden_layers=a.layers)
        size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt) if f.endswith(".safetensors"))
        from s1.model.config import Qwen2Config
        n_params = Qwen2Config.from_pretrained(ckpt).num_params()
        before_tree = os.path.join(tmp, "before")
        os.makedirs(before_tree)
        archive = subprocess.run(["git", "archive", a.ref, "s1"], cwd=HERE, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", before_tree], input=archive, check=True)
        rows = {"before": run_tree(before_tree, ckpt, tmp, "before"), "after": run_tree(HERE, ckpt, tmp, "after")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    res = {"what": "peak RSS above the phase's start, per rank, 2 gloo ranks on CPU (MB = 1e6 B)",
           "model": f"Qwen2.5-0.5B shape, {a.layers} layers, {n_params / 1e6:.0f}M params, bf16 on disk "
                    f"{size / 1e6:.0f} MB, fp32 in memory {4 * n_params / 1e6:.0f} MB",
           "before_ref": a.ref, "after_commit": commit, "machine": f"{os.cpu_count()} CPUs",
           "summary_mb": {k: {f"rank{r['rank']}_{ph}": round(r[ph]["peak_above_before"] / 1e6)
                              for r in v for ph in ("load", "export")} for k, v in rows.items()},
           "rows": rows}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("model", "summary_mb")}, indent=1))


if __name__ == "__main__":
    main()
