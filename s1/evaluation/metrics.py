"""Test-time-scaling metrics (the s1 paper's Control, Scaling, Performance) and majority voting.

Definitions used here (all accuracies in percent, as the paper reports them):

- A *run* is one generation (question x sweep point x sample). A *setting* (a sweep point, e.g.
  budget forcing with max 1024 thinking tokens) has runs; f(setting) = mean correctness of its
  runs (with K samples this is the average pass@1) and compute(setting) = the mean thinking tokens
  of its runs. Each setting may have limits [a_min, a_max] on its compute (usually only a_max, the
  thinking budget it states or enforces; class-conditional "long" prompts have only a_min).
- **Control** (paper eq. 1) = (1/|A|) * sum over settings a of 1(a_min <= compute(a) <= a_max),
  inclusive, over the settings that have a limit: the share of budget *settings* whose mean
  compute stays within their limits. None when no setting has a limit. `control()`.
- **Control (runs)** = the share of *runs* whose own thinking tokens lie within their setting's
  limits (a stricter, per-run view; not the paper's metric; a rejection-sampling question that
  never fit counts as outside). `control_runs()`.
- **Scaling** = mean over all pairs of settings a < b (ordered by compute) of
  (f(b) - f(a)) / (log2 c(b) - log2 c(a)), c = compute. The paper writes the slope over "budgets";
  its reported values only come out with log2 of the measured thinking tokens (s1-32B's AIME24
  curve 500->0 ... 7320->56.7 gives 14.8 ~ "15"). Pairs with equal compute have no slope and are
  skipped; None with fewer than two distinct compute values. Units: accuracy points per doubling.
- **Performance** = max over settings of f.
- **Majority voting** (parallel scaling): per question, the K sampled answers are grouped by grader
  equivalence (by the grading stage, s1/evaluation/grading.py::group_votes: this module grades
  nothing), in the order the samples were drawn; the largest group wins; a tie
  goes to the group whose first member was drawn first (deterministic, no RNG). Unanswered
  samples (None) do not vote; a question where nobody answered counts as wrong. Compute of a
  majority@k point = mean over questions of the *total* thinking tokens of its k samples.
- **Plain chat** (--no-think): no thinking phase, so a run's compute is its output tokens
  (`compute_tokens`; rows say `compute_of: output tokens`).
- **Clipped budgets**: a run whose thinking budget is more than the context holds carries
  `budget_clipped` and `context_thinking_limit` (s1/evaluation/sweep.py::context_clipping); a
  setting with such runs reports `clipped_runs` and the largest `context_thinking_limit`.
- **Rejection sampling**: a run carries `rs_accepted` and `attempts` (its tries: the index of the
  accepted sample); a setting reports `mean_attempts` and `max_attempts_used`; a question whose samples never fit its
  budget (the attempt cap was reached) counts as wrong, and a setting's compute is the mean
  thinking tokens of its *accepted* samples (the paper's Figure 6 x axis), not of all attempts.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Iterable



def within_limits(value: float, a_min: float | None, a_max: float | None) -> bool | None:
    """a_min <= value <= a_max (inclusive; a missing bound is no bound). None when there is no
    limit at all (nothing to obey)."""
    if a_max is None and not a_min:
        return None
    if a_max is not None and value > a_max:
        return False
    if a_min and value < a_min:
        return False
    return True


def control(settings: Iterable[tuple[float, float | None, float | None]]) -> float | None:
    """Paper eq. 1: the fraction (0..1) of settings (compute, a_min, a_max) with a limit whose
    compute lies within it."""
    flags = [within_limits(c, lo, hi) for c, lo, hi in settings]
    flags = [f for f in flags if f is not None]
    return sum(flags) / len(flags) if flags else None


def run_within(r: dict, a_min: float | None, a_max: float | None) -> bool | None:
    """Does one run respect its setting's limits? A rejection-sampling run that never fit its
    budget does not (the engine cut its last sample at the cap). None without limits."""
    ok = within_limits(r["thinking_tokens"], a_min, a_max)
    return ok and r.get("rs_accepted", True) is not False if ok is not None else None


def control_runs(records: Iterable[dict], a_min: float | None = None, a_max: float | None = None) -> float | None:
    """Fraction (0..1) of runs within [a_min, a_max] (`run_within`); None without limits."""
    flags = [run_within(r, a_min, a_max) for r in records]
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


def compute_tokens(r: dict) -> int:
    """A run's test-time compute: its thinking tokens; for a plain-chat run (--no-think, no thinking
    phase: the record carries `plain`) its output tokens, as the paper's parallel-scaling curve of
    Qwen2.5-32B-Instruct counts them."""
    if r.get("plain") and r.get("output_tokens") is not None:
        return int(r["output_tokens"])
    return r["thinking_tokens"]


def counts_as_correct(r: dict) -> bool:
    """A run is right when its answer grades right, unless it is a rejection-sampling run whose
    samples never fit the budget (no sample to answer with)."""
    return bool(r["correct"]) and r.get("rs_accepted", True) is not False


def point_stats(records: list[dict], a_min: float | None = None, a_max: float | None = None) -> dict:
    """Accuracy (%), mean thinking tokens, compute, Control of the setting and of its runs, counts.

    compute = mean thinking tokens of the runs that count (for rejection sampling: the accepted
    samples; 0.0 when none was accepted); `control` is 1.0 / 0.0 for this one setting (None
    without limits); `control_runs` counts every run (a sample that never fit is outside)."""
    if not records:
        raise ValueError("a point with no runs")
    n = len(records)
    counted = [r for r in records if r.get("rs_accepted", True) is not False]
    compute = sum(compute_tokens(r) for r in counted) / len(counted) if counted else 0.0
    ok = within_limits(compute, a_min, a_max) if counted else None
    out = {
        "runs": n,
        "questions": len({r["qid"] for r in records}),
        "accuracy": 100.0 * sum(counts_as_correct(r) for r in records) / n,
        "mean_thinking_tokens": compute,
        "compute": compute,
        "a_min": a_min or None,
        "a_max": a_max,
        "control": None if ok is None else float(ok),
        "control_runs": control_runs(records, a_min, a_max),
        "answered": sum(r.get("extracted") is not None for r in records) / n,
        "mean_waits_used": sum(r.get("waits_used", 0) for r in records) / n,
        "errors": sum(r.get("finish_reason") == "error" for r in records),
    }
    if any("rs_accepted" in r for r in records):
        out["mean_attempts"] = sum(r.get("attempts", 1) for r in records) / n
        out["max_attempts_used"] = max(r.get("attempts", 1) for r in records)
        out["never_fit"] = n - len(counted)
    if any(r.get("plain") for r in records):
        out["compute_of"] = "output tokens"     # plain chat: no thinking phase
    clipped = [r["context_thinking_limit"] for r in records if r.get("budget_clipped")]
    if clipped:   # the budget was more than the context holds: the context stopped these runs
        out["clipped_runs"] = len(clipped)
        out["context_thinking_limit"] = max(clipped)
    return out


def majority_curve(records: list[dict], ks: list[int] | None = None) -> list[dict]:
    """majority@k for one point's records (which carry `sample`, `qid`, `thinking_tokens` and the
    grading stage's `vote_group` / `vote_correct`): uses samples 0..k-1 of each question; the
    largest group wins, a tie goes to the group drawn first. Default ks: 1, 2, 4, ... K. Grades
    nothing: records without vote groups are refused (group them first with
    s1/evaluation/grading.py::group_votes)."""
    if any("vote_group" not in r for r in records):
        raise ValueError("majority_curve counts the grading stage's vote groups: run "
                         "s1.evaluation.grading.group_votes (or grade_records) on the records first")
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
            count: dict[int, int] = {}
            verdict: dict[int, bool] = {}
            for r in first:                     # dicts keep first-appearance order
                g = r["vote_group"]
                if g is not None:
                    count[g] = count.get(g, 0) + 1
                    verdict[g] = r["vote_correct"]
            if count:
                order = list(count)
                best = max(range(len(order)), key=lambda i: (count[order[i]], -i))
                correct += bool(verdict[order[best]])
            compute += sum(compute_tokens(r) for r in first)
        out.append({"k": k, "accuracy": 100.0 * correct / len(by_q), "compute": compute / len(by_q)})
    return out


def curve_metrics(rows: list[dict]) -> dict:
    """Control / Scaling / Performance of one method from its summary rows (each with accuracy,
    compute, mean_thinking_tokens, a_min, a_max). Control is judged on each row's mean thinking
    tokens per sample; Scaling on (compute, accuracy) with compute > 0 (log2 needs it);
    Performance over every row."""
    return {   # a row without a verdict (rejection sampling that accepted nothing) is left out
        "control": control((r["mean_thinking_tokens"], r.get("a_min"), r.get("a_max")) for r in rows
                           if r.get("control", 0.0) is not None),
        "scaling": scaling((r["compute"], r["accuracy"]) for r in rows if r["compute"] > 0),
        "performance": performance((r["compute"], r["accuracy"]) for r in rows),
    }
