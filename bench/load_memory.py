"""Peak host memory of loading a Qwen2.5-0.5B-shaped checkpoint (random weights, bf16).

Writes the checkpoint once (to --dir, default a temp dir), then loads it in a fresh subprocess and
reports that process's peak RSS above its baseline (after imports) next to the weights' size.
The claim being checked: loading holds about one copy of the weights, never two.

    python -m bench.load_memory [--dir /tmp/qwen05b-random] [--shard-size 5GB]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

def write_checkpoint(path: str, shard_size: str) -> None:
    from s1.model.loading import save_random_checkpoint
    save_random_checkpoint(path, "0.5B", seed=0, max_shard_size=shard_size)   # bf16, the model's own init


def child(path: str) -> None:
    import torch  # noqa: F401  (imports count toward the baseline, not the load)
    from s1.model.loading import load_model
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/status") as f:
        cur = [l for l in f if l.startswith("VmRSS")][0]
    base_now = int(cur.split()[1]) * 1024
    m = load_model(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
    print(json.dumps({"weights_bytes": nbytes, "baseline_rss": base_now, "baseline_peak": base,
                      "peak_rss": peak, "load_overhead_bytes": peak - base_now}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "qwen25-05b-random"))
    ap.add_argument("--shard-size", default="5GB")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.dir)
        return 0
    if not os.path.exists(os.path.join(a.dir, "config.json")):
        print(f"writing random Qwen2.5-0.5B-shaped checkpoint to {a.dir} ...", flush=True)
        write_checkpoint(a.dir, a.shard_size)
    out = subprocess.run([sys.executable, "-m", "bench.load_memory", "--child", "--dir", a.dir],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    gib = 2 ** 30
    ratio = r["load_overhead_bytes"] / r["weights_bytes"]
    print(f"| weights (bf16) | peak RSS added by load_model | ratio |\n|---|---|---|\n"
          f"| {r['weights_bytes'] / gib:.3f} GiB | {r['load_overhead_bytes'] / gib:.3f} GiB | {ratio:.2f}x |")
    from s1.common.env import environment
    r.update(ratio=ratio, checkpoint=a.dir, **environment())
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/load_memory.json", "w") as f:
        json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
