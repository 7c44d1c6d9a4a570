"""Benchmark: the model-free curation stages over the whole shared pool (~17K questions).

    python -m bench.curate            # full pool, writes bench/results/curate_modelfree.json
    python -m bench.curate --smoke    # tiny fixture pool (tests/fixtures/curate), seconds
    python -m bench.curate --e2e      # whole pipeline through the real engine with tiny random-weight
                                      # teacher + student on the whole shared pool (~30 min on 2 CPU
                                      # cores; --max-questions N: a seeded subset), 100-question
                                      # selection; report kept in bench/results/curate_e2e/

Model-free = every stage except teacher/student/domain-model generation: sources, decontam
(8-grams vs ../shared/data/eval), traces imported from a file (here: a file built from the pool's
own reference solutions, standing in for teacher traces), quality, difficulty (no students:
token lengths only, Qwen2.5 tokenizer), domains (keyword TF-IDF classifier), select (s1, 1000),
output (save_to_disk + parquet + JSONL + report md/png). Target: < 60 s on 2 cores.
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


# --e2e's tiny random-weight teacher and student (s1.model.loading.save_random_checkpoint); 8192
# positions: the MSC classification prompt is ~4.5K tokens
TINY = dict(std=0.05, hidden_size=32, intermediate_size=64, max_position_embeddings=8192, torch_dtype="float32")


def build_trace_file(pool: list[str], path: Path) -> int:
    """s1K-column rows (question, thinking_trajectories, attempt) from the pool's solutions."""
    from s1.curate.sources import load_sources

    records, _ = load_sources(pool, progress=False)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            thinking = r["solution"] or f"The answer is {r['answer']}."
            f.write(json.dumps({"question": r["question"], "thinking_trajectories": [thinking],
                                "attempt": f"\\boxed{{{r['answer']}}}"}) + "\n")
    return len(records)


def run_e2e(args) -> int:
    """End-to-end run through our engine with tiny random-weight checkpoints (traces are nonsense,
    every stage runs). By default the model stages see every decontaminated question; with
    --max-questions a seeded subset (the report says so)."""
    import shutil

    from s1.common.env import environment
    from s1.curate.pipeline import SHARED, STAGES, Config, Pipeline
    from s1.model.loading import save_random_checkpoint

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tok = SHARED / "qwen2.5-tokenizer"
    teacher, student = work / "tiny_teacher", work / "tiny_student"
    if not (teacher / "config.json").exists():
        save_random_checkpoint(teacher, "smoke", tokenizer_dir=tok, seed=0, **TINY)
    if not (student / "config.json").exists():
        save_random_checkpoint(student, "smoke", tokenizer_dir=tok, seed=1, **TINY)
    cfg = Config(out=str(work / "run"), pool=[str(SHARED / "pool")], teacher=str(teacher), students=[str(student)],
                 teacher_params={"max_thinking_tokens": 16, "max_answer_tokens": 8, "temperature": 0.7},
                 student_params={"max_thinking_tokens": 16, "max_answer_tokens": 8},
                 max_questions=args.max_questions, size=100, seed=0, batch_size=args.batch_size,
                 domain_model=str(student) if args.domain_model else None)
    pipe = Pipeline(cfg)
    t0 = time.perf_counter()
    times = pipe.run()
    total = time.perf_counter() - t0
    dest = ROOT / "bench" / "results" / "curate_e2e"
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", "report.png"):
        shutil.copy(work / "run" / f, dest / f)
    summary = {"bench": "curate_e2e", "teacher": "tiny random Qwen2 (hidden 32, 2 layers, seed 0)",
               "student": "tiny random Qwen2 (seed 1)", "max_questions": args.max_questions,
               "teacher_params": cfg.teacher_params, "student_params": cfg.student_params,
               "domain_model": bool(args.domain_model),
               "counts": {s: pipe.stats(s)["count"] for s in STAGES},
               "stage_seconds_this_call": {k: round(v, 2) for k, v in times.items()},
               "stage_seconds_recorded": {s: pipe.stats(s)["seconds"] for s in STAGES},
               "total_seconds_this_call": round(total, 2), "batch_size": args.batch_size,
               "env": environment()}
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.curate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny fixture pool, for CI / CPU checks")
    ap.add_argument("--pool", nargs="+", help="default: ../shared/data/pool (smoke: tests/fixtures/curate/pool)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--out", help="result JSON (default bench/results/curate_modelfree[_smoke].json)")
    ap.add_argument("--e2e", action="store_true", help="whole pipeline through the real engine (tiny random models)")
    ap.add_argument("--workdir", default="/tmp/curate_e2e", help="--e2e: checkpoints + run folder (resumable)")
    ap.add_argument("--max-questions", type=int, default=None,
                    help="--e2e: model stages on a seeded subset of this many questions (default: all)")
    ap.add_argument("--batch-size", type=int, default=64, help="--e2e: questions per engine call")
    ap.add_argument("--domain-model", action="store_true", help="--e2e: classify domains with the tiny student too")
    args = ap.parse_args(argv)
    if args.e2e:
        return run_e2e(args)

    from s1.curate.pipeline import SHARED, STAGES, Config, Pipeline

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
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),   # 2 cores shared with other agents
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
