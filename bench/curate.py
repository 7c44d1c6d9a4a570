"""Benchmark: the model-free curation stages over the whole shared pool (~17K questions).

    python -m bench.curate            # full pool, writes bench/results/curate_modelfree.json
    python -m bench.curate --smoke    # tiny fixture pool (tests/fixtures/curate), seconds

Model-free = every stage except teacher/student/domain-model generation: sources, decontam
(8-grams vs ../shared/data/eval), traces imported from a file (here: a file built from the pool's
own reference solutions, standing in for teacher traces), quality, difficulty (no students:
token lengths only, Qwen2.5 tokenizer), domains (keyword TF-IDF classifier), select (s1, 1000),
output (save_to_disk + parquet + JSONL + report md/png). Target (issue 6): < 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_trace_file(pool: list[str], path: Path) -> int:
    """s1K-column rows (question, thinking_trajectories, attempt) from the pool's solutions."""
    from curate.sources import load_sources

    records, _ = load_sources(pool, progress=False)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            thinking = r["solution"] or f"The answer is {r['answer']}."
            f.write(json.dumps({"question": r["question"], "thinking_trajectories": [thinking],
                                "attempt": f"\\boxed{{{r['answer']}}}"}) + "\n")
    return len(records)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.curate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny fixture pool, for CI / CPU checks")
    ap.add_argument("--pool", nargs="+", help="default: ../shared/data/pool (smoke: tests/fixtures/curate/pool)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--out", help="result JSON (default bench/results/curate_modelfree[_smoke].json)")
    args = ap.parse_args(argv)

    from curate.pipeline import SHARED, STAGES, Config, Pipeline

    fixtures = ROOT / "tests" / "fixtures" / "curate"
    pool = args.pool or ([str(fixtures / "pool")] if args.smoke else [str(SHARED / "pool")])
    size = args.size or (5 if args.smoke else 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n_traces = build_trace_file(pool, tmp / "traces.jsonl")
        setup_s = time.perf_counter() - t0
        cfg = Config(out=str(tmp / "run"), pool=pool, traces=[str(tmp / "traces.jsonl")], size=size, seed=0,
                     eval_sets=[str(fixtures / "eval")] if args.smoke else [str(SHARED / "eval")], progress=False,
                     **({"msc": str(SHARED / "curation" / "msc.json"), "tokenizer": str(SHARED / "qwen2.5-tokenizer")}))
        pipe = Pipeline(cfg, log=lambda m: None)
        t0 = time.perf_counter()
        times = pipe.run()
        total = time.perf_counter() - t0
        counts = {s: pipe.stats(s)["count"] for s in STAGES}
        agreement = pipe.stats("domains")["stats"]["agreement_with_pool_labels"]["total"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    import numpy
    import torch
    result = {
        "bench": "curate_modelfree" + ("_smoke" if args.smoke else ""), "pool": pool, "questions_loaded": counts["sources"],
        "stage_seconds": {k: round(v, 3) for k, v in times.items()}, "total_seconds": round(total, 3),
        "trace_file_build_seconds": round(setup_s, 3), "trace_rows": n_traces, "counts": counts,
        "keyword_domain_agreement": agreement, "target_seconds": 60, "passed": total < 60,
        "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "numpy": numpy.__version__, "torch": torch.__version__, "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print("| stage | seconds | records out |\n|---|---|---|")
    for s in STAGES:
        print(f"| {s} | {times.get(s, 0):.2f} | {counts[s]} |")
    print(f"| **total** | **{total:.2f}** | |")
    print(json.dumps(result))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{result['bench']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
