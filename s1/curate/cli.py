"""`s1 curate`: the whole pipeline, or one stage.

    s1 curate --pool ../shared/data/pool --out runs/s1k --size 1000 --traces pool-solutions
    s1 curate --pool ../shared/data/pool --out runs/s1k --size 1000 --teacher Qwen/Qwen2.5-32B-Instruct \\
              [--students CKPT ...]
    s1 curate --recipe s1 --pool ... --out runs/s1k --traces FILE \\
              --students Qwen/Qwen2.5-7B-Instruct Qwen/Qwen2.5-32B-Instruct --judge CKPT
                                                    s1's own rules (s1.curate.s1rules): its quality
                                                    regexes, plain-chat students at temperature 0.05
                                                    judged against the full solution, preselection,
                                                    the two-phase domain sampler (seeded)
    s1 curate <stage> --out runs/s1k [options]      stage in: sources decontam traces quality
                                                    difficulty domains select output
    s1 curate variants --data ROWS --method tcc|scc|ccc --tokenizer DIR --out FILE
                                                    training rows for the conditional methods

The pool has questions but no reasoning traces: give a teacher (--teacher: generated through our
engine), a traces file (--traces FILE), or `--traces pool-solutions` (a model-free run in seconds:
each question's reference solution stands in for its trace).
Settings are saved to <out>/config.json; a later call (whole pipeline or one stage) starts from
them and overrides only the options it names. Up-to-date stages are skipped (--force reruns).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from s1.common.cli import HelpFormatter
from s1.curate.pipeline import RECIPES, STAGES, TRACES_NEEDED, Config, Pipeline, usage_errors
from s1.curate.select import SELECTORS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 curate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="run folder (stage outputs, caches, dataset, report)")
    p.add_argument("--recipe", choices=RECIPES,
                   help="s1: curation as s1 ran it (its quality regexes, plain-chat students at T=0.05 judged "
                        "against the full solution by --judge, preselection, two-phase domain sampler); "
                        "project: this project's earlier heuristics (the demo's; default)")
    p.add_argument("--pool", nargs="+", help="pool folders/files (CSV/JSON/JSONL), a pool root, or hf:NAME[:SPLIT]")
    p.add_argument("--eval", dest="eval_sets", nargs="+", help="evaluation sets to decontaminate against (default ../shared/data/eval)")
    p.add_argument("--ngram", type=int, help="n of the n-gram decontamination (default 8, as s1)")
    p.add_argument("--aime-max-year", type=int, help="keep AIME rows with Year <= this (default 2022, as s1)")
    g = p.add_argument_group("traces (teacher)")
    g.add_argument("--teacher", help="teacher checkpoint run through our engine: an HF-format folder or a "
                                     "Hugging Face Hub id in the local HF cache")
    g.add_argument("--traces", nargs="+", help="import traces: JSONL/JSON/parquet/save_to_disk/hf:NAME with s1K "
                                               "columns; 'pool-solutions': the pool's reference solutions stand in "
                                               "(a model-free run)")
    g.add_argument("--max-thinking-tokens", type=int, help="teacher: cap on thinking tokens (budget forcing)")
    g.add_argument("--min-thinking-tokens", type=int, help="teacher: floor on thinking tokens")
    g.add_argument("--num-wait", type=int, help="teacher: 'Wait' extensions when it stops thinking")
    g.add_argument("--temperature", type=float, help="teacher: sampling temperature (default 0: greedy)")
    g.add_argument("--max-answer-tokens", type=int, help="teacher: cap on answer tokens")
    g.add_argument("--max-questions", type=int, help="run the model stages on a seeded subset of this many questions (default: all)")
    g = p.add_argument_group("difficulty (students)")
    g.add_argument("--students", nargs="+", help="student checkpoints (folders or cached Hub ids); keep "
                                                 "questions every student gets wrong")
    g.add_argument("--student-max-thinking-tokens", type=int, help="students: cap on thinking tokens")
    g.add_argument("--student-max-answer-tokens", type=int, help="students: cap on answer tokens")
    g.add_argument("--student-temperature", type=float, help="students: sampling temperature (default 0; --recipe s1: 0.05)")
    g.add_argument("--student-max-tokens", type=int, help="--recipe s1: cap on a student's plain-chat reply (default 32768)")
    g.add_argument("--judge", help="--recipe s1: grader checkpoint (folder or cached Hub id) run through our engine "
                                   "with s1's grading prompt")
    g.add_argument("--judge-url", help="--recipe s1: grade on an OpenAI-compatible endpoint instead (pip install -e '.[judge]')")
    g.add_argument("--judge-model", help="--judge-url: the endpoint's model (default claude-3-5-sonnet-20241022, s1's)")
    g.add_argument("--judge-max-tokens", type=int, help="grader reply cap (default 8192, as s1's Claude call)")
    g.add_argument("--tokenizer", help="Qwen2.5 tokenizer folder for trace lengths (default ../shared/data/qwen2.5-tokenizer)")
    g = p.add_argument_group("domains / selection")
    g.add_argument("--domain-model", help="checkpoint that classifies MSC domains (default: keyword classifier)")
    g.add_argument("--msc", help="msc.json (default ../shared/data/curation/msc.json)")
    g.add_argument("--size", type=int, help="questions to select (default 1000, as s1K)")
    g.add_argument("--seed", type=int, help="selection seed (default 0)")
    g.add_argument("--gen-seed", type=int, help="seed of teacher/student sampling and of the --max-questions subset (default 0)")
    g.add_argument("--selector", choices=SELECTORS, help="project recipe: selection method (default s1: uniform "
                                                         "domain, then longer traces first; --recipe s1 has its own "
                                                         "two-phase sampler)")
    g.add_argument("--preselected", help="file of ids or JSONL {id|question} taken before sampling")
    p.add_argument("--device", help="engine device: cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, help="questions per engine call and per cache append (default 64)")
    p.add_argument("--force", action="store_true", help="rerun the requested stages even if up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


_SAMPLING = {"max_thinking_tokens": "max_thinking_tokens", "min_thinking_tokens": "min_thinking_tokens",
             "num_wait": "num_wait", "temperature": "temperature", "max_answer_tokens": "max_answer_tokens",
             "max_tokens": "max_tokens"}


def resolve_models(args: argparse.Namespace) -> None:
    """--teacher / --students / --domain-model as cached Hugging Face Hub ids -> their folders."""
    from s1.common.hub import resolve_model_path
    if args.teacher:
        args.teacher = resolve_model_path(args.teacher, "--teacher")
    if args.students:
        args.students = [resolve_model_path(s, "--students") for s in args.students]
    if args.domain_model:
        args.domain_model = resolve_model_path(args.domain_model, "--domain-model")
    if args.judge:
        args.judge = resolve_model_path(args.judge, "--judge")


def make_config(args: argparse.Namespace) -> Config:
    saved_path = Path(args.out) / "config.json"
    base = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    names = {f.name for f in fields(Config)}
    cfg = {k: v for k, v in base.items() if k in names}
    for k, v in vars(args).items():
        if k in names and v is not None:
            cfg[k] = v
    tp, sp = dict(cfg.get("teacher_params") or {}), dict(cfg.get("student_params") or {})
    for a, key in _SAMPLING.items():
        if getattr(args, a, None) is not None:
            tp[key] = getattr(args, a)
        sa = getattr(args, "student_" + a, None)
        if sa is not None:
            sp[key] = sa
    cfg["teacher_params"], cfg["student_params"] = tp, sp
    cfg["out"] = args.out
    cfg["progress"] = not args.no_progress
    return Config(**cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stages = STAGES
    if argv and argv[0] == "variants":
        from s1.curate import variants
        return variants.main(argv[1:])
    if argv and argv[0] in STAGES:
        stages, argv = (argv[0],), argv[1:]
    elif argv and not argv[0].startswith("-"):
        print(f"s1 curate: unknown stage {argv[0]!r}; stages: {' '.join(STAGES)} "
              f"(or 'variants')", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve_models(args)
    except FileNotFoundError as e:     # before any stage runs
        print(f"s1 curate: error: {e}", file=sys.stderr)
        return 2
    cfg = make_config(args)
    pipe = Pipeline(cfg)
    errs = usage_errors(cfg, [s for s in stages if args.force or not pipe.is_done(s)])   # before any stage runs
    if errs:
        for e in errs:
            print(f"s1 curate: error: {e}", file=sys.stderr)
        return 2
    # the pool has no traces: say so before any stage runs (not after sources and decontamination)
    earlier_ready = stages[0] != "traces" or pipe.is_done("decontam")   # else the pipeline names the missing stage
    if ("traces" in stages and not cfg.teacher and not cfg.traces and earlier_ready
            and (args.force or not pipe.is_done("traces"))):
        print(f"s1 curate: error: {TRACES_NEEDED}", file=sys.stderr)
        return 1
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    try:
        times = pipe.run(stages, force=args.force)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"s1 curate: error: {e}", file=sys.stderr)
        return 1
    if "output" in stages and (Path(cfg.out) / "report.md").exists():
        print(f"[curate] dataset: {Path(cfg.out) / 'dataset'}; report: {Path(cfg.out) / 'report.md'}", file=sys.stderr)
    print(json.dumps({"seconds": {k: round(v, 3) for k, v in times.items()}}))
    return 0
