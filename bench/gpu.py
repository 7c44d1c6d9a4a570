"""One command for a GPU window: every GPU check and benchmark, in priority order, each under its
own time cap inside one overall deadline, every line printed as it is measured.

    python -m bench.gpu --deadline 540              # the lent GPU's whole window
    python -m bench.gpu --deadline 300 --parts tests,parity,decode
    python -m bench.gpu --smoke --deadline 120       # CPU: every part's --smoke variant (the harness works)

Parts (default order = priority; `--list` shows them with their caps):
  tests     the GPU test files on CUDA (kernels vs references, sampler, budget-forcing kernel,
            paged attention + KV store), pytest -x
  parity    engine greedy parity vs naive decoding with near-tie accounting; five engines in a row
            with memory back to where it started (bench/engine_checks.py)
  decode    bench.decode on 0.5B (batch-1 % of bandwidth; nano-vllm workload x5 alternated with
            budget forcing: steady throughput + overhead median/spread)
  sampler   sampling + budget rules per step, fused kernel vs torch path, batch 1/32/256
  decode_qwen3  bench.decode --preset qwen3: the same on Qwen3-0.6B shapes (nano-vllm's and
            mini-sglang's model: per-head q/k RMSNorm, head_dim 128, tied)
  decode_big  bench.decode on 1.5B and 7B (the head_dim-128 shapes)
  eval      bench.eval_sweep: MATH500 x 4 budgets in one call (repeated prompts)
  kernels   bench.kernels (attention vs SDPA backends, elementwise % of bandwidth, fused CE)
  train     bench.train (ours vs transformers, MFU, memory)
  qk_norm   bench.decode --preset qwen3 --qk-norm-cost: Qwen3-0.6B with and without its q/k norms
            (does fusing them into RoPE pay? unmeasured so far)
Each part is a subprocess with its own timeout = min(its cap, time left - a margin); a part that
times out or fails does not stop the next. A part whose test-only dependency is not installed
(tests: pytest, from pip install -e ".[test]") is skipped with a note, and the others run.
Logs: bench/results/gpu/<part>.log; the summary (device, commit, versions, date, per part: status,
seconds, the result files it wrote): bench/results/gpu/summary.json and .md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_TESTS = ["tests/kernels/test_triton_ops.py", "tests/kernels/test_sampling.py", "tests/kernels/test_paged_attention.py",
             "tests/kernels/test_kv_store.py", "tests/bench/test_kernels.py",
             "tests/infer/test_engine.py::test_engine_with_triton_cache_kernels"]

# name: (cap seconds, GPU argv, smoke argv)
PARTS = {
    "tests": (150, [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *GPU_TESTS],
              [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/kernels/test_sampling.py",
               "-k", "by_hand"]),
    "parity": (60, [sys.executable, "-m", "bench.engine_checks"],
               [sys.executable, "-m", "bench.engine_checks", "--smoke"]),
    "decode": (150, [sys.executable, "-m", "bench.decode", "--models", "0.5B", "--skip-hf",
                     "--json", "bench/results/decode_0.5B.json"],
               [sys.executable, "-m", "bench.decode", "--smoke", "--skip-hf", "--rounds", "1"]),
    "sampler": (40, [sys.executable, "-m", "bench.sampler"], [sys.executable, "-m", "bench.sampler", "--smoke"]),
    "decode_qwen3": (150, [sys.executable, "-m", "bench.decode", "--preset", "qwen3", "--skip-hf",
                           "--json", "bench/results/decode_qwen3.json"],
                     [sys.executable, "-m", "bench.decode", "--smoke", "--preset", "qwen3", "--skip-hf", "--rounds", "1"]),
    "decode_big": (150, [sys.executable, "-m", "bench.decode", "--models", "1.5B,7B", "--skip-hf",
                         "--json", "bench/results/decode_big.json"], None),
    "eval": (90, [sys.executable, "-m", "bench.eval_sweep", "--limit", "128"],
             [sys.executable, "-m", "bench.eval_sweep", "--smoke"]),
    "kernels": (120, [sys.executable, "-m", "bench.kernels"], None),
    "train": (120, [sys.executable, "-m", "bench.train", "--steps", "3"], None),
    "qk_norm": (150, [sys.executable, "-m", "bench.decode", "--preset", "qwen3", "--qk-norm-cost", "--skip-hf",
                      "--rounds", "2", "--json", "bench/results/decode_qwen3_qk_norm.json"], None),
}
# parts that need a module the package does not install (test-only dependencies)
NEEDS = {"tests": "pytest"}
MARGIN = 5
OK = ("ok", "skipped (GPU only)")


def run_part(name: str, argv: list[str], timeout: float, log_dir: str) -> dict:
    """Run one part, echoing every output line as `[name] line` the moment it appears."""
    t0 = time.perf_counter()
    log_path = os.path.join(log_dir, f"{name}.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        tail: list[str] = []

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                print(f"[{name}] {line}", end="", flush=True)
                tail.append(line)
                del tail[:-20]
        th = threading.Thread(target=pump, daemon=True)
        th.start()
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            status = f"timed out after {timeout:.0f}s"
        th.join(timeout=5)
    return {"part": name, "status": status, "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "log": os.path.relpath(log_path, ROOT), "tail": "".join(tail[-8:])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--deadline", type=float, default=540, help="seconds for everything")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts, in the order to run")
    ap.add_argument("--smoke", action="store_true", help="CPU: each part's --smoke variant (parts without one are skipped)")
    ap.add_argument("--list", action="store_true", help="print the parts and their caps, then exit")
    ap.add_argument("--out", default=None, help="results folder (default bench/results/gpu, smoke: a temp folder)")
    args = ap.parse_args(argv)
    if args.list:
        for k, (cap, _, smoke) in PARTS.items():
            print(f"{k:12s} cap {cap:4d}s{'' if smoke else '  (GPU only)'}")
        return 0
    names = [p for p in args.parts.split(",") if p]
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    if not args.smoke:
        import torch
        if not torch.cuda.is_available():
            print("bench.gpu: no CUDA device (use --smoke to check the harness on a CPU)", file=sys.stderr)
            return 2
    if args.out:
        out = args.out
    elif args.smoke:
        import tempfile
        out = tempfile.mkdtemp(prefix="s1_gpu_smoke_")
    else:
        out = os.path.join(ROOT, "bench", "results", "gpu")
    os.makedirs(out, exist_ok=True)
    from s1.common.env import environment
    env = environment()
    print(f"bench.gpu: {env['device']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''}, "
          f"torch {env['torch']}, triton {env['triton']}, deadline {args.deadline:.0f}s, parts {names}", flush=True)
    start = time.perf_counter()
    results = []
    for name in names:
        cap, gpu_argv, smoke_argv = PARTS[name]
        argv_ = smoke_argv if args.smoke else gpu_argv
        left = args.deadline - (time.perf_counter() - start) - MARGIN
        if argv_ is None:
            results.append({"part": name, "status": "skipped (GPU only)"})
            continue
        need = NEEDS.get(name)
        if need and importlib.util.find_spec(need) is None:
            why = f"skipped (needs {need}: pip install {need}, or pip install -e \".[test]\")"
            print(f"bench.gpu: --- {name}: {why} ---", flush=True)
            results.append({"part": name, "status": why})
            continue
        if left < 10:
            results.append({"part": name, "status": "skipped (deadline)"})
            continue
        print(f"bench.gpu: --- {name} (cap {min(cap, left):.0f}s, {left:.0f}s left) ---", flush=True)
        r = run_part(name, argv_, min(cap, left), out)
        results.append(r)
        print(f"bench.gpu: --- {name}: {r['status']} in {r['seconds']}s ---", flush=True)
    summary = {"bench": "gpu", "env": env, "smoke": args.smoke, "deadline_s": args.deadline,
               "total_s": round(time.perf_counter() - start, 1), "parts": results}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = ["| part | status | seconds | log |", "|---|---|---|---|"]
    md += [f"| {r['part']} | {r['status']} | {r.get('seconds', '-')} | {r.get('log', '-')} |" for r in results]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(f"# bench.gpu — {env['device']}, commit {env['commit']}, {env['date']}\n\n" + "\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return 0 if all(r["status"] in OK or r["status"].startswith("skipped (needs ") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
