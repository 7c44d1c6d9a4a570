"""A command's wall time on a quiet machine and next to a CPU-heavy neighbour.

    python -m bench.busy -- s1 demo --quick
    python -m bench.busy --runs quiet,busy,busy-torch-default -- s1 demo --quick

Runs the command (in a fresh temporary folder, so its outputs do not land in the repository)
once per scenario, and writes one JSON record (bench/results/busy_<command>.json by default):
  quiet               nothing else started by this script (the machine's load average is recorded
                      before and after: other users' work counts and is visible there);
  busy                the same command while a load process runs beside it: a torch matmul loop
                      with --load-threads threads (default: one per core), i.e. a second
                      CPU-heavy process that keeps every core busy;
  busy-torch-default  busy, with S1_THREADS set to torch's default thread count (what `s1` did
                      before its thread policy): the cost the policy avoids;
  quiet-torch-default quiet, with torch's default thread count: what the policy gives up on an
                      idle machine.
The load is bounded: it is started just before the command and stopped (SIGTERM, then SIGKILL)
as soon as the command ends, exits by itself after --load-max-s seconds, and also when this
script dies. --timeout caps each run (a run that hits it is recorded as timed out).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from s1.common.cli import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("quiet", "busy", "busy-torch-default", "quiet-torch-default")

LOAD_CODE = """
import os, sys, time
import torch
torch.set_num_threads({threads})
parent, deadline = {parent}, time.time() + {max_s}
a = torch.randn(512, 512)
n = 0
while time.time() < deadline:
    for _ in range(20):
        a = torch.tanh(a @ a) # CPU-heavy, multi-threaded
    n += 20
    if os.getppid() != parent:   # the measuring script died: stop
        break
print(n, flush=True)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.busy", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=HelpFormatter)
    p.add_argument("--runs", default="quiet,busy", help=f"comma list of scenarios: {', '.join(SCENARIOS)}")
    p.add_argument("--load-procs", type=int, default=1, help="load processes started beside the command")
    p.add_argument("--load-threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of each load process")
    p.add_argument("--load-max-s", type=float, default=3600.0, help="a load process exits by itself after this")
    p.add_argument("--timeout", type=float, default=3600.0, help="cap on each run of the command, seconds")
    p.add_argument("--out", help="JSON file (default: bench/results/busy_<command words>.json)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to time, after --")
    return p


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_load(procs: int, threads: int, max_s: float) -> list[subprocess.Popen]:
    code = LOAD_CODE.format(threads=threads, parent=os.getpid(), max_s=max_s)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True) for _ in range(procs)]


def stop_load(load: list[subprocess.Popen]) -> list[int | None]:
    iters = []
    for p in load:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in load:
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        iters.append(int(out.split()[0]) if out and out.split() and out.split()[0].isdigit() else None)
    return iters


def run_once(cmd: list[str], scenario: str, a: argparse.Namespace, torch_default: int) -> dict:
    env = dict(os.environ)
    if scenario.endswith("torch-default"):
        env["S1_THREADS"] = str(torch_default)
    load = start_load(a.load_procs, a.load_threads, a.load_max_s) if scenario.startswith("busy") else []
    try:
        return _timed(cmd, scenario, a, env, load)
    finally:
        for p in load:                 # stopped even when this script is interrupted
            if p.poll() is None:
                p.kill()


def _timed(cmd, scenario, a, env, load) -> dict:
    if load:
        time.sleep(2.0)   # let the load reach full speed (torch import) before the clock starts
    before = _loadavg()
    rusage0 = os.times()
    t0 = time.perf_counter()
    timed_out = False
    with tempfile.TemporaryDirectory(prefix="s1_busy_") as work:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        except BaseException:          # this script is stopped: so is the command
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        rusage1 = os.times()
        summary = None
        demo = Path(work) / "s1_demo" / "demo_summary.json"
        if demo.exists():
            d = json.loads(demo.read_text())
            summary = {"accuracy_by_budget": d.get("accuracy_by_budget"), "torch_threads": d.get("torch_threads"),
                       "stages": [{k: s[k] for k in ("stage", "wall_s", "cpu_s")} for s in d.get("stages", [])]}
    load_iters = stop_load(load)
    rec = {"scenario": scenario, "wall_s": round(wall, 1), "rc": proc.returncode, "timed_out": timed_out,
           "cpu_s": round((rusage1.children_user + rusage1.children_system)
                          - (rusage0.children_user + rusage0.children_system), 1),
           "loadavg_before": before, "loadavg_after": _loadavg(), "load_procs": len(load),
           "load_iterations": load_iters, "S1_THREADS": env.get("S1_THREADS"), "demo": summary,
           "stderr_tail": (err or "")[-600:] if proc.returncode else ""}
    print(f"[busy] {scenario}: {rec['wall_s']} s wall, {rec['cpu_s']} s CPU, rc {proc.returncode}"
          f"{' (timed out)' if timed_out else ''}, load average {before} -> {rec['loadavg_after']}",
          file=sys.stderr, flush=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # -> finally: the load is stopped
    p = build_parser()
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        p.error("give the command to time after --, e.g. python -m bench.busy -- s1 demo --quick")
    runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    bad = [r for r in runs if r not in SCENARIOS]
    if bad:
        p.error(f"--runs: unknown scenario(s) {', '.join(bad)}; choose from {', '.join(SCENARIOS)}")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(cmd)).strip("_")[:60]
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"busy_{slug}.json"
    import torch   # torch's default intra-op thread count on this machine (before any policy)
    torch_default = torch.get_num_threads()
    records = [run_once(cmd, r, a, torch_default) for r in runs]
    by = {r["scenario"]: r for r in records}
    result = {"command": cmd, "runs": records,
              "load": {"procs": a.load_procs, "threads_each": a.load_threads,
                       "what": "torch 512x512 matmul + tanh loop (LOAD_CODE in bench/busy.py)"},
              "torch_default_threads": torch_default, "cpu_count": os.cpu_count()}
    if "quiet" in by and "busy" in by and by["quiet"]["wall_s"]:
        result["busy_over_quiet"] = round(by["busy"]["wall_s"] / by["quiet"]["wall_s"], 2)
    for other in ("busy-torch-default", "quiet-torch-default"):
        if "quiet" in by and other in by and by["quiet"]["wall_s"]:
            result[other.replace("-", "_") + "_over_quiet"] = round(by[other]["wall_s"] / by["quiet"]["wall_s"], 2)
    from s1.common.env import environment
    result["env"] = environment()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("| scenario | wall s | CPU s | load avg before -> after |\n|---|---|---|---|")
    for r in records:
        print(f"| {r['scenario']} | {r['wall_s']} | {r['cpu_s']} | {r['loadavg_before'][0]} -> {r['loadavg_after'][0]} |")
    if "busy_over_quiet" in result:
        print(f"\nbusy / quiet = {result['busy_over_quiet']}x (target <= 2x)")
    print(json.dumps({k: result[k] for k in result if k not in ("runs", "env")}))
    print(f"wrote {out}", file=sys.stderr)
    return 0 if all(r["rc"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
