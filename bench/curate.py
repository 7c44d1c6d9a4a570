"""Benchmark: the model-free curation stages over the whole shared pool (~17K questions).

    python -m bench.curate            # full pool, writes bench/results/curate_modelfree.json
    python -m bench.curate --smoke    # tiny fixture pool (tests/fixtures/curate), seconds
    python -m bench.curate --recipes  # both recipes (project, s1) over the full pool, model-free: stage
                                      # counts next to s1's, bench/results/curate_recipes.{json,md}
    python -m bench.curate --e2e-s1   # (= --e2e --recipe s1, 24 questions by default)
                                      # s1's difficulty stage through the real engine: two tiny
                                      # random-weight plain-chat students and a tiny judge (plumbing
                                      # only: their verdicts are noise), bench/results/curate_e2e_s1/
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
from collections import Counter
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


# s1's published counts (paper §2 / data/filter.ipynb): pool, after missing features, after the
# quality regexes, after the difficulty filter, preselected, selected
S1_COUNTS = {"pool": 59029, "missing_features_dropped": 54116, "quality": 51581, "quality_notebook": 51607,
             "difficulty": 24496, "difficulty_notebook": 24517, "preselected_paper": 384, "preselected_notebook": 393,
             "selected": 1000}


def modelfree_run(pool: list[str], size: int, recipe: str, tmp: Path, eval_sets: list[str]):
    """The model-free pipeline (pool solutions as traces, no students) with one recipe."""
    from s1.curate.pipeline import SHARED, Config, Pipeline

    cfg = Config(out=str(tmp / f"run_{recipe}"), pool=pool, traces=["pool-solutions"], size=size, seed=0,
                 eval_sets=eval_sets, progress=False, recipe=recipe,
                 msc=str(SHARED / "curation" / "msc.json"), tokenizer=str(SHARED / "qwen2.5-tokenizer"))
    pipe = Pipeline(cfg, log=lambda m: None)
    t0 = time.perf_counter()
    times = pipe.run()
    return pipe, times, time.perf_counter() - t0


def run_recipes(args) -> int:
    """Stage counts of both recipes over the offline pool, next to s1's."""
    from s1.common.env import environment
    from s1.curate.pipeline import SHARED, STAGES

    pool = args.pool or [str(SHARED / "pool")]
    size = args.size or 1000
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in ("project", "s1"):
            pipe, times, total = modelfree_run(pool, size, recipe, Path(tmp), [str(SHARED / "eval")])
            st = {s: pipe.stats(s)["stats"] for s in STAGES}
            res[recipe] = {"counts": {s: pipe.stats(s)["count"] for s in STAGES}, "total_seconds": round(total, 2),
                           "stage_seconds": {k: round(v, 2) for k, v in times.items()},
                           "quality_rules": st["quality"]["rules"], "difficulty": {
                               k: st["difficulty"].get(k) for k in ("skipped", "teacher_graded_by", "no_verdict")},
                           "select": {k: v for k, v in st["select"].items() if k != "benchmark_histogram"},
                           "benchmark_histogram": st["select"].get("benchmark_histogram"),
                           "selected_per_source": dict(sorted(Counter(
                               r["source_type"] for r in pipe.load("select")).items())),
                           "selected_domains": len({r["domain"] for r in pipe.load("select")})}
    c0, c1 = res["project"]["counts"], res["s1"]["counts"]
    q1 = res["s1"]["quality_rules"]
    sel1 = res["s1"]["select"]
    rows = [
        ("pool (after the sources stage)", f"{S1_COUNTS['pool']:,}", c0["sources"], c1["sources"], "real (our 5 public sources, not s1's 16)"),
        ("after decontamination + dedup", "—", c0["decontam"], c1["decontam"], "real"),
        ("after quality (s1: missing features, then regexes)",
         f"{S1_COUNTS['missing_features_dropped']:,} → {S1_COUNTS['quality']:,} ({S1_COUNTS['quality_notebook']:,} in its notebook)",
         c0["quality"], c1["quality"], "real on the questions; trace features stand-in (pool solutions), so only a missing "
                                       "reference or a regex drops a row"),
        ("after difficulty (both students wrong)", f"{S1_COUNTS['difficulty']:,} ({S1_COUNTS['difficulty_notebook']:,} in its notebook)",
         c0["difficulty"], c1["difficulty"], "NOT reachable offline: needs Qwen2.5-7B/32B-Instruct and a judge; skipped (all kept)"),
        ("preselected (teacher correct AND AIME/GPQA, or MATH trace > 5,600 tokens)",
         f"{S1_COUNTS['preselected_paper']} ({S1_COUNTS['preselected_notebook']} in its notebook)", "—", sel1["preselected"],
         "partly: the teacher 'correct' = the stand-in trace's answer graded by rules (always right); no GPQA in the pool; "
         "stand-in traces are solutions, never > 5,600 tokens"),
        ("selected", f"{S1_COUNTS['selected']:,}", c0["select"], c1["select"],
         "real sampler (seeded) on keyword-classified MSC domains and solution lengths"),
    ]
    env = environment()
    md = ["# Curation stage counts on the offline pool: this project's recipe vs s1's (`--recipe s1`)", "",
          f"`python -m bench.curate --recipes`; {env.get('date', '')}, commit {env.get('commit', '')}; "
          "model-free (`--traces pool-solutions`, no students, keyword domains), seed 0.", "",
          "| stage | s1 (paper, 59K pool) | project recipe (before) | s1 recipe (after) | offline status |", "|---|---|---|---|---|"]
    md += [f"| {a} | {b} | {c:,} | {d:,} | {e} |" if isinstance(c, int) else f"| {a} | {b} | {c} | {d:,} | {e} |"
           for a, b, c, d, e in rows]
    md += ["", "s1 recipe, quality rules (a row can break several): " + ", ".join(f"{k} {v:,}" for k, v in q1.items()), "",
           f"s1 recipe, sampler: {sel1['preselected']} preselected {sel1['preselected_kinds']}, then {sel1['draws']} draws "
           f"({sel1['draws_phase1']} in phase 1 = uniform domains, {sel1['draws_phase2']} in phase 2 = AIME(+GPQA) histogram "
           f"over {len(res['s1']['benchmark_histogram'] or {})} domains; {sel1['draws_of_already_chosen']} drew an already "
           f"preselected question); {res['s1']['selected_domains']} domains in the selection "
           f"(project recipe: {res['project']['selected_domains']}).", "",
           "Selected per source: project " + ", ".join(f"{k} {v}" for k, v in res["project"]["selected_per_source"].items())
           + "; s1 " + ", ".join(f"{k} {v}" for k, v in res["s1"]["selected_per_source"].items()) + "."]
    out = {"bench": "curate_recipes", "pool": pool, "size": size, "s1_published": S1_COUNTS, "recipes": res,
           "table": [dict(zip(("stage", "s1", "project", "s1_recipe", "offline"), r)) for r in rows], "env": env}
    dest = ROOT / "bench" / "results"
    (dest / "curate_recipes.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (dest / "curate_recipes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def run_e2e_s1(args) -> int:
    """s1's difficulty stage through the real engine on a seeded subset: two tiny random-weight
    students in plain chat (capped at --student-max-tokens) and a tiny random-weight judge with
    s1's grading prompt. Verdicts of a random model are noise (mostly no "Yes"/"No" line: a missing
    feature), so this shows the plumbing and its cost, not s1's counts."""
    import shutil

    from s1.common.env import environment
    from s1.curate.pipeline import SHARED, STAGES, Config, Pipeline
    from s1.model.loading import save_random_checkpoint

    work = Path(args.workdir + "_s1")
    work.mkdir(parents=True, exist_ok=True)
    tok = SHARED / "qwen2.5-tokenizer"
    ckpts = []
    for name, seed in (("tiny_student_a", 1), ("tiny_student_b", 2), ("tiny_judge", 3)):
        if not (work / name / "config.json").exists():
            save_random_checkpoint(work / name, "smoke", tokenizer_dir=tok, seed=seed, **TINY)
        ckpts.append(str(work / name))
    n = args.max_questions or 24
    cfg = Config(out=str(work / "run"), pool=[str(SHARED / "pool")], traces=["pool-solutions"], recipe="s1",
                 students=ckpts[:2], judge=ckpts[2], judge_max_tokens=args.judge_max_tokens,
                 student_params={"max_tokens": args.student_max_tokens}, max_questions=n, size=min(n, 10),
                 seed=0, batch_size=args.batch_size)
    pipe = Pipeline(cfg)
    t0 = time.perf_counter()
    stopped = None
    try:
        times = pipe.run()
    except ValueError as e:     # random-weight judges rarely end on "Yes"/"No": nothing may survive
        stopped, times = str(e), {}
    total = time.perf_counter() - t0
    dest = ROOT / "bench" / "results" / "curate_e2e_s1"
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", "report.png"):
        if (work / "run" / f).exists() and not stopped:
            shutil.copy(work / "run" / f, dest / f)
    d = pipe.stats("difficulty")["stats"]
    verdicts = {}
    for f in sorted((work / "run" / "cache").glob("grader.jsonl")):
        from s1.curate.s1rules import parse_verdict
        replies = [json.loads(line)["reply"] for line in f.read_text().splitlines() if line.strip()]
        verdicts = {"replies": len(replies), "yes": sum(parse_verdict(r) is True for r in replies),
                    "no": sum(parse_verdict(r) is False for r in replies),
                    "no_verdict": sum(parse_verdict(r) is None for r in replies), "example_reply": replies[0][:200] if replies else None}
    summary = {"bench": "curate_e2e_s1", "students": "two tiny random Qwen2 (hidden 32, seeds 1, 2)",
               "judge": "tiny random Qwen2 (seed 3), s1's grading prompt", "max_questions": n,
               "student_params": d["student_params"], "judge_max_tokens": args.judge_max_tokens,
               "counts": {s: pipe.stats(s)["count"] for s in STAGES if pipe.stats_path(s).exists()},
               "stopped": stopped, "grader_replies": verdicts,
               "difficulty": {k: d[k] for k in ("correct_per_student", "no_verdict", "teacher_graded_by", "per_source")},
               "stage_seconds_recorded": {s: pipe.stats(s)["seconds"] for s in STAGES if pipe.stats_path(s).exists()},
               "stage_seconds_this_call": {k: round(v, 2) for k, v in times.items()},
               "total_seconds_this_call": round(total, 2), "env": environment()}
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


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
    ap.add_argument("--e2e-s1", action="store_true", help="--e2e --recipe s1 (default --max-questions 24)")
    ap.add_argument("--recipes", action="store_true", help="both recipes over the full pool, model-free, next to s1's counts")
    ap.add_argument("--recipe", choices=("project", "s1"), default="project",
                    help="model-free / --e2e: which curation recipe (s1: s1's own rules)")
    ap.add_argument("--student-max-tokens", type=int, default=16, help="--e2e --recipe s1: plain-chat reply cap")
    ap.add_argument("--judge-max-tokens", type=int, default=16, help="--e2e --recipe s1: grader reply cap")
    args = ap.parse_args(argv)
    if args.recipes:
        return run_recipes(args)
    if args.e2e_s1:
        args.e2e, args.recipe = True, "s1"
    if args.e2e:
        return run_e2e_s1(args) if args.recipe == "s1" else run_e2e(args)

    from s1.curate.pipeline import SHARED, STAGES, Config, Pipeline

    fixtures = ROOT / "tests" / "fixtures" / "curate"
    pool = args.pool or ([str(fixtures / "pool")] if args.smoke else [str(SHARED / "pool")])
    size = args.size or (5 if args.smoke else 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n_traces = build_trace_file(pool, tmp / "traces.jsonl")
        setup_s = time.perf_counter() - t0
        cfg = Config(out=str(tmp / "run"), pool=pool, traces=[str(tmp / "traces.jsonl")], size=size, seed=0, recipe=args.recipe,
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
        "bench": "curate_modelfree" + ("_s1" if args.recipe == "s1" else "") + ("_smoke" if args.smoke else ""), "pool": pool, "questions_loaded": counts["sources"],
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
