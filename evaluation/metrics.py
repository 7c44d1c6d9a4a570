"""Test-time-scaling metrics (s1-reference §4, s1 paper §5.2 / Table 3) and majority voting.

Definitions used here (all accuracies in percent, as the paper reports them):

- A *run* is one generation (question x sweep point x sample). A *point* is one setting of the
  sweep (e.g. budget forcing with max 1024 thinking tokens); f(point) = mean correctness of its
  runs (with K samples this is the average pass@1).
- **Control** = fraction of runs that respect their point's limits: thinking tokens <= the
  point's max (when it has one) and >= its min (when it has one). Runs of points with no limit
  at all are not counted (they have nothing to obey); Control is None when no run has a limit.
  Budget forcing is 100% by construction for its max; prompt-based methods are not.
- **Scaling** = mean over all pairs of points a < b (ordered by compute) of
  (f(b) - f(a)) / (log2 c(b) - log2 c(a)), with compute c = mean thinking tokens of the point's runs.
  The paper writes the slope over "budgets"; its reported values only come out with log2 of the
  measured thinking tokens (e.g. s1-32B's AIME24 curve 500->0 ... 7320->56.7 gives 14.8 ~ "15").
  Pairs with equal compute have no slope and are skipped; None with fewer than two distinct
  compute values. Units: accuracy points per doubling of thinking tokens.
- **Performance** = max over points of f.
- **Majority voting** (parallel scaling): per question, the K sampled answers are grouped by grader
  equivalence (`grade(a, b)`), in the order the samples were drawn; the largest group wins; a tie
  goes to the group whose first member was drawn first (deterministic, no RNG). Unanswered
  samples (None) do not vote; a question where nobody answered counts as wrong. Compute of a
  majority@k point = mean over questions of the *total* thinking tokens of its k samples.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Iterable

from evaluation.grader import grade


def is_controlled(thinking_tokens: int, max_tokens: int | None, min_tokens: int | None) -> bool | None:
    """Does one run respect its limits? None when the run had no limit."""
    if max_tokens is None and not min_tokens:
        return None
    if max_tokens is not None and thinking_tokens > max_tokens:
        return False
    if min_tokens and thinking_tokens < min_tokens:
        return False
    return True


def control(records: Iterable[dict]) -> float | None:
    """Fraction (0..1) of limited runs within their limits (see module docstring)."""
    flags = [is_controlled(r["thinking_tokens"], r.get("max_thinking_tokens"), r.get("min_thinking_tokens"))
             for r in records]
    flags = [f for f in flags if f is not None]
    return sum(flags) / len(flags) if flags else None


def scaling(curve: Iterable[tuple[float, float]]) -> float | None:
    """Mean pairwise slope of accuracy (%) against log2(compute) over points ordered by compute."""
    pts = sorted((float(c), float(f)) for c, f in curve)
    slopes = []
    for (ca, fa), (cb, fb) in itertools.combinations(pts, 2):
        if ca <= 0 or cb <= 0:
            raise ValueError(f"compute must be positive for log2 scaling, got {ca}, {cb}")
        if cb == ca:
            continue
        slopes.append((fb - fa) / (math.log2(cb) - math.log2(ca)))
    return sum(slopes) / len(slopes) if slopes else None


def performance(curve: Iterable[tuple[float, float]]) -> float | None:
    accs = [f for _, f in curve]
    return max(accs) if accs else None


def majority_vote(answers: list[str | None], kind: str = "math") -> str | None:
    """The most common answer up to grader equivalence; ties -> earliest first appearance."""
    groups: list[list] = []  # [representative, count]
    for a in answers:
        if a is None:
            continue
        for g in groups:
            if a == g[0] or grade(a, g[0], kind):
                g[1] += 1
                break
        else:
            groups.append([a, 1])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))  # count, then earliest group
    return groups[best][0]


def point_stats(records: list[dict]) -> dict:
    """Accuracy (%), mean thinking tokens, control and counts of one point's runs."""
    if not records:
        raise ValueError("a point with no runs")
    n = len(records)
    acc = 100.0 * sum(bool(r["correct"]) for r in records) / n
    mean_think = sum(r["thinking_tokens"] for r in records) / n
    compute = sum(r.get("compute_tokens", r["thinking_tokens"]) for r in records) / n
    return {
        "runs": n,
        "questions": len({r["qid"] for r in records}),
        "accuracy": acc,
        "mean_thinking_tokens": mean_think,
        "compute": compute,
        "control": control(records),
        "answered": sum(r.get("extracted") is not None for r in records) / n,
        "mean_waits_used": sum(r.get("waits_used", 0) for r in records) / n,
        "errors": sum(r.get("finish_reason") == "error" for r in records),
    }


def majority_curve(records: list[dict], ks: list[int] | None = None) -> list[dict]:
    """majority@k for one point's records (which carry `sample`, `qid`, `extracted`, `reference`,
    `kind`, `thinking_tokens`): uses samples 0..k-1 of each question. Default ks: 1, 2, 4, ... K."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_q[r["qid"]].append(r)
    for rs in by_q.values():
        rs.sort(key=lambda r: r["sample"])
    k_max = min(len(rs) for rs in by_q.values())
    if ks is None:
        ks = sorted({2**j for j in range(int(math.log2(k_max)) + 1)} | {k_max})
    out = []
    for k in ks:
        if k < 1 or k > k_max:
            raise ValueError(f"majority@{k} needs {k} samples per question; have {k_max}")
        correct, compute = 0, 0.0
        for rs in by_q.values():
            first = rs[:k]
            vote = majority_vote([r["extracted"] for r in first], first[0]["kind"])
            correct += vote is not None and grade(vote, first[0]["reference"], first[0]["kind"])
            compute += sum(r.get("compute_tokens", r["thinking_tokens"]) for r in first)
        out.append({"k": k, "accuracy": 100.0 * correct / len(by_q), "compute": compute / len(by_q)})
    return out


def curve_metrics(curve: list[tuple[float, float]], runs: list[dict] | None = None) -> dict:
    """Control / Scaling / Performance of one method's curve [(compute, accuracy %)]."""
    return {
        "control": control(runs) if runs is not None else None,
        "scaling": scaling(curve),
        "performance": performance(curve),
    }
