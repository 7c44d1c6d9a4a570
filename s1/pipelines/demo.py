"""`s1 demo`: the whole s1 pipeline at toy scale on CPU, in a few minutes.

    s1 demo [--out DIR] [--seed 0] [--steps N] [--quick]

Stages (each with a progress bar; a summary with per-stage wall and CPU time at the end):
  1. pool       a synthetic pool of reasoning problems in s1K schema (s1/pipelines/toy.py: running
                digit sum mod 10, traces that list every intermediate sum) + a held-out eval set;
  2. tokenizer  a small byte-level BPE trained on the rendered pool, tokenizer.json format;
  3. curate     the s1 pipeline (s1/curate/): sources -> 8-gram decontamination against the eval set
                + exact dedup -> traces (imported: the pool carries them) -> quality -> difficulty
                (no student models: trace length only) -> MSC domains -> s1 selection (uniform
                domain, then p ∝ 2^-rank by trace length) -> s1K-schema dataset;
  4. train      a tiny Qwen2-architecture model FROM SCRATCH with the SFT trainer (s1/train/,
                through s1/pipelines/tiny.py);
  5. eval       a thinking-budget sweep with budget forcing through the engine (s1.infer.LLM) and the
                eval harness (s1/evaluation/sweep.py): table (budget, mean thinking tokens, accuracy;
                Control / Scaling / Performance) and the scaling-curve PNG.

The task is built so that accuracy rises with the thinking budget: a trace of n digits is 3n + 1
thinking tokens ("a3=3 b5=8 ..."); a forced stop after b tokens leaves the model with the running
sum of the first b/3 digits, so it answers right only if the trace was complete (or by a ~10% guess).

Outputs under --out: pool/, tokenizer/, curate/ (stages + report), model/ (HF checkpoint +
metrics.jsonl), eval/ (samples.jsonl, summary.json/.md, scaling.png), demo_summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from s1.common.threads import add_threads_argument

# Full and --quick settings. Calibrated on 2 CPU cores (see bench/NOTES.md, "Demo" and "Demo in
# three minutes"): the answer token (five tokens after the last running sum) is learned last, at
# ~300-400 steps; 400 steps (cosine decayed too early) stayed at ~12% in both settings, 500 learn.
# --quick learns as well at batch 24 as at 32 (same curve, 12.5% -> 100%) for a quarter less work.
FULL = dict(pool_size=12000, select_size=8000, eval_size=256, max_digits=16, steps=500,
            batch=64, lr=3e-3, budgets="0,6,12,18,24,30,36,42,48,54")
QUICK = dict(pool_size=4000, select_size=2800, eval_size=128, max_digits=8, steps=500,
             batch=24, lr=3e-3, budgets="0,6,12,18,24,30")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="s1_demo", help="output folder (default: ./s1_demo)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic pool, the selection, training and sampling (default: 0)")
    p.add_argument("--steps", type=int, help="training steps (default: 500, --quick: 500)")
    p.add_argument("--quick", action="store_true",
                   help="smaller run (digits <= 8, fewer problems, batch 24); the test suite runs it")
    p.add_argument("--pool-size", type=int, help="synthetic pool size")
    p.add_argument("--select-size", type=int, help="questions the s1 selection keeps for training")
    p.add_argument("--eval-size", type=int, help="held-out questions drawn (those shorter than every selected one are dropped)")
    p.add_argument("--max-digits", type=int, help="longest question (<= 16)")
    p.add_argument("--batch", type=int, help="global batch (sequences per step)")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW, 5%% warmup, cosine)")
    p.add_argument("--budgets", help="max thinking tokens per sweep point, comma list ('none' = no cap)")
    add_threads_argument(p, default_doc="1: every model of the demo is tiny")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _settings(a) -> dict:
    s = dict(QUICK if a.quick else FULL)
    for k in ("pool_size", "select_size", "eval_size", "max_digits", "steps", "batch", "lr", "budgets"):
        v = getattr(a, k)
        if v is not None:
            s[k] = v
    s["seed"] = a.seed
    from s1.pipelines.toy import MAX_DIGITS
    for k in ("pool_size", "select_size", "eval_size", "steps", "batch"):
        if s[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1 (got {s[k]})")
    if not 1 <= s["max_digits"] <= MAX_DIGITS:
        raise ValueError(f"--max-digits must lie in 1..{MAX_DIGITS} (got {s['max_digits']})")
    if s["lr"] <= 0:
        raise ValueError(f"--lr must be > 0 (got {s['lr']})")
    return s


class _Clock:
    """Per-stage wall and CPU time (this process + finished children)."""

    def __init__(self):
        self.rows: list[dict] = []

    @staticmethod
    def _cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def start(self, name: str):
        print(f"\n=== [{len(self.rows) + 1}/5] {name} ===", file=sys.stderr, flush=True)
        self._t, self._c, self._name = time.perf_counter(), self._cpu(), name

    def stop(self, **info):
        row = {"stage": self._name, "wall_s": round(time.perf_counter() - self._t, 2),
               "cpu_s": round(self._cpu() - self._c, 2)} | info
        self.rows.append(row)
        return row


def _msc_path(out: Path) -> str:
    """The 61 MSC domains from ../shared/data when present; otherwise a one-domain stand-in (the
    demo must run on a fresh machine with only what the package ships; every synthetic question
    falls into one domain anyway, so the s1 selector then ranks by trace length alone)."""
    from s1.curate.pipeline import SHARED
    shared = SHARED / "curation" / "msc.json"
    if shared.exists():
        return str(shared)
    path = out / "msc_demo.json"
    path.write_text(json.dumps([{"code": "11", "title": "Number theory",
                                 "descriptions": ["digits, sums of digits, congruences, modular arithmetic"],
                                 "prompt": ""}]))
    return str(path)


def scaling_table(summary: dict) -> str:
    """Budget | mean thinking tokens | accuracy, then Control / Scaling / Performance."""
    lines = ["| max thinking tokens | mean thinking tokens | accuracy % | within the cap |", "|---|---|---|---|"]
    for r in summary["points"]:
        cap = "none" if r["max_thinking_tokens"] is None else r["max_thinking_tokens"]
        ctl = "-" if r["control"] is None else ("yes" if r["control"] else "no")
        lines.append(f"| {cap} | {r['mean_thinking_tokens']:.1f} | {r['accuracy']:.1f} | {ctl} |")
    m = summary["methods"]["budget_forcing"]
    ctl = "-" if m["control"] is None else f"{100 * m['control']:.0f}%"
    sc = "-" if m["scaling"] is None else f"{m['scaling']:.1f}"
    lines += ["", f"Control {ctl} · Scaling {sc} (accuracy points per doubling of thinking tokens) · "
                  f"Performance {m['performance']:.1f}%"]
    return "\n".join(lines)


def run(s: dict, out: Path, progress: bool = True) -> dict:
    """The five stages; returns the demo summary dict (also written to out/demo_summary.json)."""
    import numpy as np
    import torch

    from s1.common.jsonl import write_jsonl
    from s1.pipelines import toy as synthetic

    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    t_all = time.perf_counter()

    # ---- 1. pool + held-out eval questions
    clock.start("pool: synthetic digit-sum problems")
    pool = synthetic.generate_pool(s["pool_size"], seed=s["seed"], max_digits=s["max_digits"])
    pool_path = write_jsonl(out / "pool" / "digit_sum.jsonl", pool)
    # Eval questions from another seed, lengths uniform over the same range; the curate stage
    # decontaminates the pool against them (8-grams + exact matches), as s1 does with its
    # benchmarks. Duplicates inside the eval set are dropped (short questions repeat).
    ev, seen = [], set()
    for r in synthetic.generate_pool(4 * s["eval_size"], seed=s["seed"] + 10_000, max_digits=s["max_digits"]):
        if r["question"] not in seen:
            seen.add(r["question"])
            ev.append(r)
        if len(ev) == s["eval_size"]:
            break
    eval_path = write_jsonl(out / "eval_set" / "test.jsonl",
                            [{"id": f"q{i:04d}", "question": r["question"], "answer": r["answer"]}
                             for i, r in enumerate(ev)])
    clock.stop(pool=len(pool), eval_questions=len(ev))

    # ---- 2. tokenizer
    clock.start("tokenizer: byte-level BPE on the rendered pool")
    tok_dir = out / "tokenizer"
    synthetic.build_tokenizer(pool[:2000], str(tok_dir))
    from s1.model.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(tok_dir)
    clock.stop(vocab_size=tok.vocab_size)
    print(f"tokenizer: {tok.vocab_size} tokens in {tok_dir}", file=sys.stderr)

    # ---- 3. curate
    clock.start("curate: s1 pipeline over the pool")
    from s1.curate.pipeline import STAGES, Config, Pipeline
    cur_dir = out / "curate"
    if cur_dir.exists():
        shutil.rmtree(cur_dir)   # the pool is regenerated on every run: start the stages fresh
    ccfg = Config(out=str(cur_dir), pool=[pool_path], eval_sets=[eval_path], traces=[pool_path],
                  msc=_msc_path(out), tokenizer=str(tok_dir), size=s["select_size"], seed=s["seed"],
                  selector="s1", progress=progress)
    pipe = Pipeline(ccfg)
    pipe.run(STAGES)
    counts = {st: pipe.stats(st)["count"] for st in STAGES}
    selected = pipe.load("select")
    lens = np.bincount([len(synthetic.parse_question(r["question"])) for r in selected],
                       minlength=s["max_digits"] + 1)[1:].tolist()
    # s1's selection prefers long traces (p ∝ 2^-rank within a domain), so the shortest questions
    # are selected rarely or not at all; a model that never saw an n-digit question does not know
    # where such a trace ends. Evaluate on the lengths the training set covers (each at least a
    # quarter as often as the most frequent length; reported, and the eval set file keeps only those).
    min_digits = 1 + next(i for i, c in enumerate(lens) if c >= max(lens) / 4)
    ev = [r for r in ev if len(synthetic.parse_question(r["question"])) >= min_digits]
    write_jsonl(eval_path, [{"id": f"q{i:04d}", "question": r["question"], "answer": r["answer"]}
                            for i, r in enumerate(ev)])
    clock.stop(counts=counts, selected_by_num_digits=lens, eval_min_digits=min_digits, eval_questions=len(ev))
    print("curate: " + " -> ".join(f"{st} {n}" for st, n in counts.items())
          + f"; selected questions per digit count 1..{s['max_digits']}: {lens}; evaluating the "
          f"{len(ev)} held-out questions with {min_digits}..{s['max_digits']} digits", file=sys.stderr)

    # ---- 4. train from scratch
    clock.start("train: tiny Qwen2 from scratch (SFT trainer)")
    from s1.pipelines.tiny import sweep, train_tiny
    from s1.train.data import load_rows
    model_dir, res = train_tiny(load_rows(str(cur_dir / "dataset")), tok, out / "model",
                                {"steps": s["steps"], "batch": s["batch"], "lr": s["lr"], "seed": s["seed"],
                                 "device": "cpu", "progress": progress})
    clock.stop(steps=res["steps"], final_loss=round(res["final_loss"], 4) if res["final_loss"] is not None else None,
               epochs=res["epochs"])

    # ---- 5. eval: thinking-budget sweep with budget forcing
    clock.start("eval: budget-forcing sweep")
    from s1.evaluation.report import summary_markdown
    from s1.evaluation.sweep import make_points, parse_budgets
    from s1.evaluation.tasks import TaskItem
    items = [TaskItem(id=f"q{i:04d}", question=r["question"], answer=r["answer"], kind="integer")
             for i, r in enumerate(ev)]
    points = make_points(["budget_forcing"], parse_budgets(s["budgets"], "--budgets"), [0])
    eval_dir = out / "eval"
    summary = sweep(model_dir, items, points, out_dir=eval_dir, task="digit_sum_mod10", seed=s["seed"],
                    progress=progress)
    timing = summary.pop("_timing")
    clock.stop(requests=timing["requests"], output_tokens=timing["output_tokens"])

    wall = time.perf_counter() - t_all
    acc = {str(r["max_thinking_tokens"]): r["accuracy"] for r in summary["points"]}
    from s1.common.env import environment  # device, commit, versions, date next to the numbers
    demo = {"settings": s, "wall_s": round(wall, 1), "stages": clock.rows, "accuracy_by_budget": acc,
            "methods": summary["methods"], "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "plot": str(eval_dir / "scaling.png"), "env": environment()}
    (out / "demo_summary.json").write_text(json.dumps(demo, indent=2))
    print("\n" + summary_markdown(summary))
    print(scaling_table(summary))
    print("\n| stage | wall s | CPU s |\n|---|---|---|")
    for r in clock.rows:
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")
    print(f"\ntotal {wall:.1f}s wall on {os.cpu_count()} cores (load average at the end "
          f"{demo['load_avg_1m_at_end']}); plot: {demo['plot']}; everything under {out}")
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    from s1.common.threads import configure_threads
    try:
        s = _settings(a)
        # every model of the demo is tiny: one thread unless --threads / S1_THREADS say otherwise
        s["threads"] = configure_threads(a.threads, work_hint="tiny")
    except ValueError as e:
        parser.error(str(e))
    run(s, Path(a.out), progress=not a.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
