"""Timed `s1 eval` sweep on a random-weight Qwen2.5-0.5B-shaped model (the evaluation harness's
GPU throughput check).

Workload: MATH-500 (or --limit N of it), budget forcing at max thinking tokens 512/1024/2048/4096,
greedy, answer phase capped at --max-answer-tokens; every (question, budget) request goes to ONE
`LLM.generate` call (2,000 requests for the full set), so the engine runs 256+ sequences at once.
A random model never ends thinking on its own, so every run uses its full budget: the sweep
decodes ~sum(budgets)/len(budgets) + answer tokens per request, and the numbers measure the engine
on a long-decode batch, not the model's accuracy (which is ~0).

Claim checked: evaluation is throughput-bound by the engine, not by Python around it. Reported:
generate wall time and output tok/s, and the harness time (task loading, request building,
extraction + grading + metrics + plot) as a fraction of the total.

    python -m bench.eval_sweep                      # GPU: full MATH-500 x 4 budgets
    python -m bench.eval_sweep --limit 64 --budgets 512,1024
    python -m bench.eval_sweep --smoke              # CPU: tiny model, 4 questions, tiny budgets
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def _tokenizer_dir() -> str:
    from s1.common.paths import shared_data_dir

    d = shared_data_dir() / "qwen2.5-tokenizer"
    if not (d / "tokenizer.json").exists():
        raise SystemExit(f"bench.eval_sweep: needs the Qwen2.5 tokenizer at {d} (set S1_SHARED_DATA)")
    return str(d)


def write_model(path: str, smoke: bool) -> None:
    """A random-weight checkpoint (the model's own init, seed 0): Qwen2.5-0.5B-shaped in bf16, or
    with --smoke a tiny fp32 one."""
    from s1.model.loading import save_random_checkpoint

    tiny = dict(hidden_size=32, intermediate_size=64, max_position_embeddings=2048, torch_dtype="float32")
    save_random_checkpoint(path, "smoke" if smoke else "0.5B", tokenizer_dir=_tokenizer_dir(), seed=0,
                           **(tiny if smoke else {}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="math500")
    ap.add_argument("--budgets", default="512,1024,2048,4096")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, default=512)
    ap.add_argument("--model-dir", default=None, help="reuse/write the random checkpoint here")
    ap.add_argument("--out", default=None, help="eval output folder (default: a temp dir)")
    ap.add_argument("--json", default="bench/results/eval_sweep.json")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny model, 4 questions, budgets 8,16")
    a = ap.parse_args(argv)

    import torch

    from s1.common.env import environment
    from s1.infer import LLM, SamplingParams
    from s1.evaluation.sweep import make_points, parse_budgets, run_eval
    from s1.evaluation.tasks import load_task

    device = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    if device == "cpu" and not a.smoke:
        print("bench.eval_sweep: no GPU; use --smoke for the CPU check", file=sys.stderr)
        return 2
    if a.smoke:
        a.budgets, a.limit, a.max_answer_tokens = "8,16", a.limit or 4, min(a.max_answer_tokens, 4)
    tmp = tempfile.mkdtemp(prefix="s1_eval_sweep_")
    model_dir = a.model_dir or os.path.join(tmp, "model")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        write_model(model_dir, a.smoke)

    t_start = time.perf_counter()
    items = load_task(a.task, limit=a.limit)
    points = make_points(["budget_forcing"], parse_budgets(a.budgets, "--budgets"), [0])
    t0 = time.perf_counter()
    llm = LLM(model_dir, device=device, max_num_seqs=a.max_num_seqs,
              dtype=torch.float32 if a.smoke else torch.bfloat16)
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = run_eval(llm, items, points, base_params={"max_answer_tokens": a.max_answer_tokens},
                       out_dir=a.out or os.path.join(tmp, "eval"), task=a.task, model="random-qwen2.5-0.5b-shape"
                       if not a.smoke else "random-tiny", sampling_params_cls=SamplingParams)
    t_eval = time.perf_counter() - t1
    timing = summary["_timing"]
    harness = (t1 - t_start - t_init) + (t_eval - timing["generate_wall_s"])
    result = {
        "bench": "eval_sweep", "smoke": a.smoke, "task": a.task, "questions": len(items),
        "budgets": a.budgets, "requests": timing["requests"], "max_num_seqs": a.max_num_seqs,
        "engine_init_s": t_init, "generate_wall_s": timing["generate_wall_s"],
        "output_tokens": timing["output_tokens"], "output_tokens_per_s": timing["output_tokens_per_s"],
        "harness_s": harness, "harness_fraction": harness / (harness + timing["generate_wall_s"]),
        "mean_thinking_tokens": [p["mean_thinking_tokens"] for p in summary["points"]],
        "engine_stats": getattr(llm, "stats", {}),
    } | environment()
    print("| task | requests | generate s | output tok/s | harness s | harness % |")
    print("|---|---|---|---|---|---|")
    print(f"| {a.task} x{len(items)} | {result['requests']} | {result['generate_wall_s']:.1f} | "
          f"{result['output_tokens_per_s']:.0f} | {harness:.2f} | {100 * result['harness_fraction']:.1f} |")
    print(json.dumps(result, default=str))
    if not a.smoke and a.json:
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    if not a.model_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
