"""`s1 curate`: the whole pipeline, or one stage.

    s1 curate --pool ../shared/data/pool --out runs/cur [--teacher CKPT] [--students CKPT ...]
              [--size 1000] [--seed 0]
    s1 curate <stage> --out runs/cur [options]      stage in: sources decontam traces quality
                                                    difficulty domains select output

Settings are saved to <out>/config.json; a later call (whole pipeline or one stage) starts from
them and overrides only the options it names. Up-to-date stages are skipped (--force reruns).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from curate.pipeline import STAGES, Config, Pipeline
from curate.select import SELECTORS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 curate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (stage outputs, caches, dataset, report)")
    p.add_argument("--pool", nargs="+", help="pool folders/files (CSV/JSON/JSONL), a pool root, or hf:NAME[:SPLIT]")
    p.add_argument("--eval", dest="eval_sets", nargs="+", help="evaluation sets to decontaminate against (default ../shared/data/eval)")
    p.add_argument("--ngram", type=int)
    p.add_argument("--aime-max-year", type=int, help="keep AIME rows with Year <= this (default 2022, as s1)")
    g = p.add_argument_group("traces (teacher)")
    g.add_argument("--teacher", help="teacher checkpoint (HF-format folder) run through our engine")
    g.add_argument("--traces", nargs="+", help="import traces: JSONL/JSON/parquet/save_to_disk/hf:NAME with s1K columns")
    g.add_argument("--max-thinking-tokens", type=int)
    g.add_argument("--min-thinking-tokens", type=int)
    g.add_argument("--num-wait", type=int)
    g.add_argument("--temperature", type=float)
    g.add_argument("--max-answer-tokens", type=int)
    g.add_argument("--max-questions", type=int, help="run the model stages on a seeded subset of this many questions")
    g = p.add_argument_group("difficulty (students)")
    g.add_argument("--students", nargs="+", help="student checkpoints; keep questions every student gets wrong")
    g.add_argument("--student-max-thinking-tokens", type=int)
    g.add_argument("--student-max-answer-tokens", type=int)
    g.add_argument("--student-temperature", type=float)
    g.add_argument("--tokenizer", help="Qwen2.5 tokenizer folder for trace lengths")
    g = p.add_argument_group("domains / selection")
    g.add_argument("--domain-model", help="checkpoint that classifies MSC domains (default: keyword classifier)")
    g.add_argument("--msc", help="msc.json (default ../shared/data/curation/msc.json)")
    g.add_argument("--size", type=int)
    g.add_argument("--seed", type=int, help="selection seed (default 0)")
    g.add_argument("--gen-seed", type=int, help="seed of teacher/student sampling and of the --max-questions subset")
    g.add_argument("--selector", choices=SELECTORS)
    g.add_argument("--preselected", help="file of ids or JSONL {id|question} taken before sampling")
    p.add_argument("--device", help="cpu or cuda (engine device)")
    p.add_argument("--batch-size", type=int, help="questions per engine call (and per cache append)")
    p.add_argument("--force", action="store_true", help="rerun the requested stages even if up to date")
    p.add_argument("--no-progress", action="store_true")
    return p


_SAMPLING = {"max_thinking_tokens": "max_thinking_tokens", "min_thinking_tokens": "min_thinking_tokens",
             "num_wait": "num_wait", "temperature": "temperature", "max_answer_tokens": "max_answer_tokens"}


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
        if getattr(args, a) is not None:
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
    if argv and argv[0] in STAGES:
        stages, argv = (argv[0],), argv[1:]
    elif argv and not argv[0].startswith("-"):
        print(f"s1 curate: unknown stage {argv[0]!r}; stages: {' '.join(STAGES)}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    cfg = make_config(args)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    try:
        times = Pipeline(cfg).run(stages, force=args.force)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"s1 curate: error: {e}", file=sys.stderr)
        return 1
    if "output" in stages and (Path(cfg.out) / "report.md").exists():
        print(f"[curate] dataset: {Path(cfg.out) / 'dataset'}; report: {Path(cfg.out) / 'report.md'}", file=sys.stderr)
    print(json.dumps({"seconds": {k: round(v, 3) for k, v in times.items()}}))
    return 0
