"""Training-data variants for the conditional test-time-scaling methods (s1 paper §5.2).

    s1 curate variants --data s1k.jsonl --method tcc --tokenizer DIR --out s1k_tcc.jsonl
            [--step-tokens 100] [--budget-grid 512,1024,...] [--step-slack 0] [--seed 0]
    s1 train --data s1k_tcc.jsonl ...          (the trainer takes the rewritten rows unchanged)

`rewrite_traces(rows, method, tokenizer, ...)` returns s1K-schema rows whose question carries the
method's instruction and whose trace carries its markers, exactly as s1/evaluation/methods.py renders
them at evaluation time, so the trainer fine-tunes on them unchanged:

  tcc  budget N drawn (seeded, uniformly) from the grid values the marked trace fits into
       (N >= its token count); prompt "... Think for up to N tokens."; before each step of ~step_tokens
       tokens a line "[r tokens left]" (r = N minus the thinking tokens so far). When no grid
       value fits, N = the marked trace's own length (found by fixed-point iteration). N is never
       below the trace length: s1 annotates real traces, it does not shorten them, which is
       why token-conditional control is weak when asked for less than a trace needs.
  scc  the trace is cut into S steps of ~step_tokens tokens; the prompt asks for S + e steps with e
       uniform in [0, step_slack]; each step starts with "[s steps left]", s counting down from S + e.
  ccc  the trace is unchanged; the prompt gets the short-thinking instruction when the trace has
       <= `threshold` tokens (default: the median trace length of the rows), else the long one.

Every output row keeps its original columns, with `question` and the trace column rewritten,
plus `trace_variant`, `thinking_budget` (tcc: N, scc: steps, ccc: class) and `trace_tokens`.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tqdm.auto import tqdm

from s1.evaluation import methods
from s1.train.data import THINKING_COLUMNS, DataError, extract_fields, load_rows
from s1.common.jsonl import write_jsonl

VARIANTS = ("tcc", "scc", "ccc")
DEFAULT_BUDGET_GRID = (512, 1024, 2048, 4096, 8192, 16384, 32768)


class _Counter:
    """Token counts of text pieces, cached (trace words repeat a lot)."""

    def __init__(self, tokenizer):
        self.tok, self.cache = tokenizer, {}

    def __call__(self, text: str) -> int:
        n = self.cache.get(text)
        if n is None:
            n = len(self.tok.encode(text)) if text else 0
            if len(self.cache) < 1_000_000:
                self.cache[text] = n
        return n


def _trace_tokens(count, thinking: str) -> int:
    # Thinking tokens as the engine counts them: the trace plus the newline before <|im_start|>answer.
    return count(thinking) + 1


def _thinking_column(row: dict, forced: str | None) -> str:
    if forced is not None:
        return forced
    for c in THINKING_COLUMNS:
        if c in row and row[c] is not None:
            return c
    raise DataError(f"no thinking column in row with columns {sorted(row)}")


def token_variant(question: str, thinking: str, count, step_tokens: int, grid, rng) -> tuple[str, str, int]:
    """(prompt question, marked trace, N) for tcc (see module docstring)."""
    steps = methods.split_steps(thinking, count, step_tokens)

    def length(n):
        return _trace_tokens(count, methods.render_token_trace(steps, n, count))

    fits = [g for g in sorted(grid) if length(g) <= g]
    if fits:
        n = int(fits[rng.integers(len(fits))])
    else:  # longer than every grid value: N = own length (marker digits change it: iterate)
        n = length(max(grid) if grid else 0)
        for _ in range(8):
            m = length(n)
            if m <= n:
                break
            n = m
    return methods.render_tcc(question, n), methods.render_token_trace(steps, n, count), n


def step_variant(question: str, thinking: str, count, step_tokens: int, step_slack: int, rng) -> tuple[str, str, int]:
    """(prompt question, marked trace, stated steps) for scc."""
    steps = methods.split_steps(thinking, count, step_tokens)
    n = len(steps) + (int(rng.integers(step_slack + 1)) if step_slack > 0 else 0)
    return methods.render_scc(question, n), methods.render_step_trace(steps, n), n


def rewrite_traces(rows: list[dict], method: str, tokenizer, *, step_tokens: int = methods.DEFAULT_STEP_TOKENS,
                   budget_grid=DEFAULT_BUDGET_GRID, step_slack: int = 0, threshold: int | None = None,
                   seed: int = 0, thinking_column: str | None = None, attempt_column: str | None = None,
                   progress: bool = False) -> tuple[list[dict], dict]:
    """Rows rewritten for `method` (tcc | scc | ccc) and a stats dict (counts, token lengths)."""
    if method not in VARIANTS:
        raise ValueError(f"unknown trace variant {method!r}; choose one of {', '.join(VARIANTS)}")
    if step_tokens < 1:
        raise ValueError(f"step_tokens must be >= 1, got {step_tokens}")
    if step_slack < 0:
        raise ValueError(f"step_slack must be >= 0, got {step_slack}")
    grid = [int(g) for g in budget_grid]
    if method == "tcc" and (not grid or any(g < 1 for g in grid)):
        raise ValueError(f"budget grid must be positive integers, got {budget_grid!r}")
    count = _Counter(tokenizer)
    rng = np.random.default_rng(seed)
    parsed = [extract_fields(r, i, thinking_column, attempt_column) for i, r in enumerate(rows)]
    lengths = [_trace_tokens(count, t) for _, t, _ in parsed]
    if method == "ccc" and threshold is None:
        threshold = int(np.median(lengths)) if lengths else 0
    out, budgets, new_lengths, fallback = [], [], [], 0
    for i, (row, (q, thinking, _)) in enumerate(tqdm(list(zip(rows, parsed)), desc=f"variant {method}",
                                                       disable=not progress)):
        if method == "tcc":
            nq, nt, b = token_variant(q, thinking, count, step_tokens, grid, rng)
            fallback += b not in grid
        elif method == "scc":
            nq, nt, b = step_variant(q, thinking, count, step_tokens, step_slack, rng)
        else:
            b = "short" if lengths[i] <= threshold else "long"
            nq, nt = methods.render_ccc(q, b), thinking
        col = _thinking_column(row, thinking_column)
        new = dict(row)
        new["question"] = nq
        new[col] = [nt] if isinstance(row[col], (list, tuple)) else nt
        new["trace_variant"] = method
        new["thinking_budget"] = b
        new["trace_tokens"] = _trace_tokens(count, nt)
        out.append(new)
        budgets.append(b)
        new_lengths.append(new["trace_tokens"])
    stats = {"method": method, "rows": len(out), "step_tokens": step_tokens,
             "mean_trace_tokens_before": float(np.mean(lengths)) if lengths else 0.0,
             "mean_trace_tokens_after": float(np.mean(new_lengths)) if new_lengths else 0.0}
    if method == "tcc":
        stats |= {"budget_grid": grid, "budget_counts": {str(g): budgets.count(g) for g in grid},
                  "outside_grid": fallback}
    elif method == "scc":
        stats |= {"step_slack": step_slack, "mean_steps": float(np.mean(budgets)) if budgets else 0.0,
                  # tokens per stated step incl. its marker: what `s1 eval --step-tokens` should use
                  "tokens_per_step": float(sum(new_lengths) / max(1, sum(budgets)))}
    else:
        stats |= {"threshold": threshold, "short": budgets.count("short"), "long": budgets.count("long")}
    return out, stats


# ----------------------------------------------------------------------------- CLI + train adapter
def _grid(s: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget-grid: {s!r} is not a comma list of integers") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--budget-grid: need positive integers, got {s!r}")
    return vals


def add_variant_arguments(p, prefix: str = "") -> None:
    """The variant settings as options."""
    p.add_argument(f"--{prefix}step-tokens", type=int, default=methods.DEFAULT_STEP_TOKENS,
                   help="tokens per step (tcc marker spacing, scc step size)")
    p.add_argument(f"--{prefix}budget-grid", type=_grid, default=list(DEFAULT_BUDGET_GRID),
                   help="tcc: budgets N to draw from (comma list)")
    p.add_argument(f"--{prefix}step-slack", type=int, default=0, help="scc: up to this many extra stated steps")
    p.add_argument(f"--{prefix}threshold", type=int, help="ccc: short/long boundary in trace tokens (default: median)")
    p.add_argument(f"--{prefix}seed", type=int, default=0, help="seed of the tcc budget draw and the scc slack")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 curate variants", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="s1K-format rows: save_to_disk dir, .json/.jsonl/.parquet, hub name")
    p.add_argument("--method", required=True, choices=VARIANTS)
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (the model's): counts tokens")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument("--split", default="train", help="split of a dataset folder or hub name")
    p.add_argument("--thinking-column", help="column of the reasoning trace (default: the s1K names)")
    p.add_argument("--attempt-column", help="column of the answer (default: the s1K names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_variant_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from s1.model.tokenizer import Tokenizer
    try:
        tok = Tokenizer.from_pretrained(a.tokenizer)
        rows = load_rows(a.data, a.split)
        out, stats = rewrite_traces(rows, a.method, tok, step_tokens=a.step_tokens, budget_grid=a.budget_grid,
                                    step_slack=a.step_slack, threshold=a.threshold, seed=a.seed,
                                    thinking_column=a.thinking_column, attempt_column=a.attempt_column,
                                    progress=not a.no_progress)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"s1 curate variants: {e}", file=sys.stderr)
        return 2
    write_jsonl(a.out, out)
    with open(a.out + ".stats.json", "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats, indent=2))
    print(f"{len(out)} rows -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
