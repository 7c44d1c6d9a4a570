"""Comparison of test-time scaling methods on the demo task (the s1 paper's Table 3).

Pipeline (one script, every stage timed):
  1. pool       running digit sum mod 10 (s1/pipelines/toy.py), plus a held-out eval set with no
                question in the pool;
  2. variants   the pool rewritten for token-, step- and class-conditional control
                (s1/curate/variants.py; a first tokenizer counts tokens, the final byte-level BPE is
                trained on plain + variant rows so the markers get merged, and the variants are
                then recomputed with the final tokenizer);
  3. train      ONE tiny Qwen2 from scratch (s1/pipelines/tiny.py: the SFT trainer) on the mixture
                plain + tcc + scc + ccc rows: each prompt tells the model which format to use, so a
                single model serves every method (budget forcing, rs and majority use the plain
                prompt it was also trained on);
  4. eval       `s1 eval`'s sweep (s1/pipelines/tiny.py, s1/evaluation/sweep.py) over every method of
                s1.evaluation.sweep.METHODS on the same budget sweep: summary.md (per-point table +
                the comparison table: Control, Control (runs), Scaling, Performance, mean thinking
                tokens per point) and scaling.png (every method's accuracy vs thinking tokens).

    python -m bench.methods --toy --out bench/results/methods   # CPU, the committed toy run
    python -m bench.methods                                     # GPU: larger model, more problems
    python -m bench.methods --smoke                             # CPU, seconds: not broken

Scales: toy = the demo's tiny model (3 layers, width 96); gpu = 6 layers, width 256, 4x the
problems and steps, K = 16 votes. The task caps questions at 16 digits, so "longer budgets" on the
GPU means budgets up to the longest marked trace (~128 tokens). Budget forcing's Control is 100% by
construction (the engine cuts thinking at the cap); the script checks it and says so.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from s1.evaluation.sweep import METHODS

SCALES = {
    "smoke": dict(pool=300, eval=6, digits=6, steps=8, batch=16, lr=3e-3, hidden=32, layers=1, heads=2, kv=1,
                  inter=64, max_pos=192, vocab=1024, budgets="6,12", grid="6,12,24,48", k=2, rs_attempts=2,
                  step=6, device="cpu", majority_budget=6),
    "toy": dict(pool=8000, eval=100, digits=16, steps=2500, batch=64, lr=3e-3, hidden=96, layers=3, heads=4, kv=2,
                inter=256, max_pos=256, vocab=1024, budgets="6,12,18,24,36,48,64",
                grid="6,12,18,24,36,48,64,96,128", k=8, rs_attempts=8, step=6, device="cpu", majority_budget=24),
    "gpu": dict(pool=32000, eval=1000, digits=16, steps=10000, batch=256, lr=2e-3, hidden=256, layers=6, heads=8,
                kv=2, inter=768, max_pos=256, vocab=1024, budgets="6,12,18,24,36,48,64",
                grid="6,12,18,24,36,48,64,96,128", k=16, rs_attempts=16, step=6, device="cuda", majority_budget=24),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.methods", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--toy", action="store_true", help="the CPU toy comparison (demo-sized model)")
    g.add_argument("--smoke", action="store_true", help="tiny CPU run that only checks the script works")
    p.add_argument("--out", help="results folder (default bench/results/methods[_gpu|_smoke])")
    p.add_argument("--work", help="scratch folder for tokenizer, model, raw samples (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="override the scale's device")
    p.add_argument("--steps", type=int, help="override training steps")
    p.add_argument("--eval-size", type=int, help="override held-out questions")
    p.add_argument("--budgets", help="override the budget sweep (comma list)")
    # every method with a thinking phase (the model is s1-style; "plain" is `s1 eval --no-think`'s)
    p.add_argument("--methods", default=",".join(m for m in METHODS if m != "plain"),
                   help="comma list of evaluation methods")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--reuse-model", action="store_true", help="skip training when WORK/model exists")
    return p


def _variant_rows(pool, tok, s, seed):
    from s1.curate.variants import rewrite_traces

    grid = [int(x) for x in s["grid"].split(",")]
    out, stats = {}, {}
    for i, m in enumerate(("tcc", "scc", "ccc")):
        out[m], stats[m] = rewrite_traces(pool, m, tok, step_tokens=s["step"], budget_grid=grid,
                                          step_slack=1, seed=seed + i)
    return out, stats


def run(s: dict, out: Path, work: Path, seed: int, methods: str, reuse_model: bool = False) -> dict:
    from s1.common.env import environment
    from s1.pipelines import toy as synthetic
    from s1.model.tokenizer import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    stages, t_all = {}, time.perf_counter()

    def stage(name, t0):
        stages[name] = round(time.perf_counter() - t0, 2)
        print(f"[bench.methods] {name}: {stages[name]:.1f}s", file=sys.stderr, flush=True)

    # ---- 1. pool + held-out eval set (exact-match decontaminated against the pool)
    t0 = time.perf_counter()
    pool, seen = [], set()
    for r in synthetic.generate_pool(s["pool"], seed=seed, max_digits=s["digits"]):
        if r["question"] not in seen:
            seen.add(r["question"])
            pool.append(r)
    ev = []
    for r in synthetic.generate_pool(20 * s["eval"], seed=seed + 10_000, max_digits=s["digits"]):
        if r["question"] not in seen:
            seen.add(r["question"])
            ev.append(r)
        if len(ev) == s["eval"]:
            break
    stage("pool", t0)

    # ---- 2. variants + tokenizer (two passes: count with a plain-pool BPE, train the final BPE
    # on plain + variant rows, recount with it)
    t0 = time.perf_counter()
    tok0_dir, tok_dir = work / "tokenizer0", work / "tokenizer"
    synthetic.build_tokenizer(pool[:1500], str(tok0_dir), s["vocab"])
    var0, _ = _variant_rows(pool[:1500], Tokenizer.from_pretrained(tok0_dir), s, seed)
    synthetic.build_tokenizer(pool[:1500] + [r for m in var0 for r in var0[m]], str(tok_dir), s["vocab"])
    tok = Tokenizer.from_pretrained(tok_dir)
    variants, vstats = _variant_rows(pool, tok, s, seed)
    step_tokens_eval = max(1, round(vstats["scc"]["tokens_per_step"]))
    mixture = pool + variants["tcc"] + variants["scc"] + variants["ccc"]
    stage("variants+tokenizer", t0)
    print(f"[bench.methods] tokenizer {tok.vocab_size} tokens; mixture {len(mixture)} rows; "
          f"scc tokens per stated step {vstats['scc']['tokens_per_step']:.2f}", file=sys.stderr)

    # ---- 3. train one model from scratch on the mixture
    t0 = time.perf_counter()
    from s1.pipelines.tiny import sweep, train_tiny
    model_dir = work / "model"
    train_res = None
    if not (reuse_model and (model_dir / "config.json").exists()):
        _, res = train_tiny(mixture, tok, model_dir, dict(s, seed=seed, progress=True))
        train_res = {"steps": res["steps"], "final_loss": res["final_loss"]}
    stage("train", t0)

    # ---- 4. the comparison sweep
    t0 = time.perf_counter()
    from s1.evaluation.report import summary_markdown
    from s1.evaluation.sweep import MethodOptions, make_points, parse_budgets
    from s1.evaluation.tasks import TaskItem
    items = [TaskItem(id=f"q{i:04d}", question=r["question"], answer=r["answer"], kind="integer")
             for i, r in enumerate(ev)]
    opts = MethodOptions(step_tokens=step_tokens_eval, rs_max_attempts=s["rs_attempts"], rs_temperature=1.0,
                         majority_k=s["k"], majority_budget=s["majority_budget"], majority_temperature=1.0)
    points = make_points([m for m in methods.split(",") if m], parse_budgets(s["budgets"]), [0], 0, opts)
    summary = sweep(model_dir, items, points, out_dir=work / "eval", task="digit_sum_mod10", seed=seed,
                    model_label=f"tiny Qwen2 {s['layers']}L x {s['hidden']} (from scratch)", device=s["device"])
    timing = summary.pop("_timing")
    stage("eval", t0)

    bf = summary["methods"].get("budget_forcing")
    if bf is not None and bf["control"] != 1.0:
        raise RuntimeError(f"budget forcing Control is {bf['control']}, must be 100% by construction")
    for f in ("summary.md", "summary.json", "scaling.png", "config.json"):
        shutil.copy(work / "eval" / f, out / f)
    result = {"bench": "methods", "env": environment(), "settings": s, "seed": seed,
              "eval_step_tokens": step_tokens_eval, "variant_stats": vstats, "train": train_res,
              "stages_s": stages, "total_s": round(time.perf_counter() - t_all, 1), "eval_timing": timing,
              "methods": summary["methods"],
              "budget_forcing_control_by_construction": None if bf is None else bf["control"] == 1.0}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    md = summary_markdown(summary)
    print(md)
    print(f"stages (s): {stages}; total {result['total_s']}s on {result['env']['device']}")
    if bf is not None:
        print(f"budget forcing Control = {100 * bf['control']:.0f}% (by construction: the engine cuts at the cap)")
    print(json.dumps({k: result[k] for k in ("bench", "stages_s", "total_s", "eval_step_tokens")}))
    return result


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    scale = "smoke" if a.smoke else "toy" if a.toy else "gpu"
    s = dict(SCALES[scale])
    for k, v in (("device", a.device), ("steps", a.steps), ("eval", a.eval_size), ("budgets", a.budgets)):
        if v is not None:
            s[k] = v
    if s["device"].startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            print("bench.methods: no CUDA device; use --toy (CPU) or --smoke", file=sys.stderr)
            return 2
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    import tempfile
    if a.out:
        out = Path(a.out)
    elif scale == "smoke":  # smoke results are not kept
        out = Path(tempfile.mkdtemp(prefix="s1_methods_smoke_"))
    else:
        out = Path({"toy": "bench/results/methods", "gpu": "bench/results/methods_gpu"}[scale])
    # pool, tokenizers, model checkpoint and raw samples stay out of the repository
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="s1_methods_work_"))
    print(f"[bench.methods] results -> {out}" + (" (a temporary folder: smoke results are not kept)"
                                                  if scale == "smoke" and not a.out else "")
          + f"; work files (pool, tokenizers, model, raw samples) -> {work}", file=sys.stderr, flush=True)
    run(s, out, work, a.seed, a.methods, reuse_model=a.reuse_model)
    print(f"[bench.methods] wrote {out} (work files in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
