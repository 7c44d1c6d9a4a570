"""Reporting of an evaluation run: summarize graded records per setting and per method, and write
the run's files. A run's data flows one way: records -> grades (s1/evaluation/grading.py: the
verdicts and the majority-vote groups) -> metrics (s1/evaluation/metrics.py, which grades
nothing) -> this report. `rescore` redoes grades and report from a finished run's files alone.

Files of a run folder:
- config.json    the sweep definition (points in order, task, model, settings)
- samples.jsonl  one line per run: qid, point, sample, the engine output (text, thinking, answer),
                 extracted answer, correct, thinking tokens, waits used, finish reason, limits
                 (rejection sampling: attempts, thinking tokens of every attempt, accepted or not)
- summary.json   per point: accuracy, mean thinking tokens, compute, limits, Control of the setting
                 and of its runs; per method: Control, Control (runs), Scaling, Performance;
                 majority@k per point when there are several samples
- summary.md     the same as markdown tables
- scaling.png    accuracy against thinking tokens (s1/evaluation/plots.py)
- timing.json    generation wall time and throughput (kept out of summary.json so that a re-score
                 reproduces summary.json byte for byte)

Limits of a setting (what Control checks, s1/evaluation/metrics.py): its max / min thinking tokens;
for "auto" the cap the engine resolved; for class-conditional short / long the mean thinking
tokens of the ccc default run (short: at most, long: at least) unless a fixed bound was given.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

from s1.common.jsonl import read_jsonl, write_jsonl
from s1.evaluation import metrics

OUTPUT_FILES = ("config.json", "samples.jsonl", "summary.json", "summary.md", "scaling.png", "timing.json")


def meta_of(config: dict) -> dict:
    return {k: config[k] for k in ("task", "model", "num_questions", "samples", "temperature", "seed")}


def point_limits(point: dict, records: list[dict], ccc_bound: float | None = None) -> tuple:
    """(a_min, a_max) of a setting; None where it has no such bound."""
    a_max, a_min = point["max_thinking_tokens"], point["min_thinking_tokens"] or None
    if a_max == "auto":  # the cap the engine resolved (the same for every request of a call)
        caps = [r.get("applied_max_thinking_tokens") for r in records]
        caps = [c for c in caps if isinstance(c, int)]
        a_max = max(caps) if caps else None
    if point["method"] == "ccc" and ccc_bound is not None:
        if point["variant"] == "short" and a_max is None:
            a_max = ccc_bound
        if point["variant"] == "long" and a_min is None:
            a_min = ccc_bound
    return a_min, a_max


def _is_reference(point: dict) -> bool:
    """The ccc default run: it sets the bound of short / long; it is no setting of its own."""
    return point["method"] == "ccc" and point["variant"] == "default"


def summarize(records: list[dict], points: list[dict], meta: dict) -> dict:
    """Summary dict from scored records (deterministic: same records -> same summary)."""
    by_point: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_point[r["point"]].append(r)
    for p in points:
        if not by_point.get(p["name"]):
            raise ValueError(f"no runs recorded for point {p['name']!r}")
    # one pass per point: its stats (or its majority curve), reused by every table below
    stats: dict[str, dict] = {}
    ref = next((p for p in points if _is_reference(p)), None)
    if ref is not None:
        stats[ref["name"]] = metrics.point_stats(by_point[ref["name"]])
    ccc_bound = stats[ref["name"]]["mean_thinking_tokens"] if ref is not None else None
    several = meta.get("samples", 1) > 1
    curves = {p["name"]: metrics.majority_curve(by_point[p["name"]]) for p in points
              if p["method"] == "majority" or several}
    rows, limits = [], {}
    for p in points:
        rs = by_point[p["name"]]
        limits[p["name"]] = a_min, a_max = point_limits(p, rs, ccc_bound)
        if p["method"] == "majority":
            rows += majority_rows(p, rs, a_min, a_max, curves[p["name"]])
        else:
            if p["name"] not in stats or (a_min, a_max) != (None, None):
                stats[p["name"]] = metrics.point_stats(rs, a_min, a_max)
            rows.append(p | stats[p["name"]] | ({"reference": True} if _is_reference(p) else {}))
    methods = {}
    for m in dict.fromkeys(p["method"] for p in points):
        mrows = [r for r in rows if r["method"] == m and not r.get("reference")]
        names = {p["name"] for p in points if p["method"] == m and not _is_reference(p)}
        runs = [r for name in names for r in by_point[name]]
        flags = [metrics.run_within(r, *limits[r["point"]]) for r in runs]
        flags = [f for f in flags if f is not None]
        methods[m] = metrics.curve_metrics(mrows) | {
            "control_runs": sum(flags) / len(flags) if flags else None,
            "points": len(mrows), "mean_thinking_tokens": [r["mean_thinking_tokens"] for r in mrows],
            "compute": [r["compute"] for r in mrows]}
    summary = dict(meta) | {"points": rows, "methods": methods}
    if ccc_bound is not None:
        summary["ccc_bound"] = ccc_bound
    if several:
        maj = {}
        for p in points:
            curve = curves[p["name"]]
            xy = [(c["compute"], c["accuracy"]) for c in curve]
            maj[p["name"]] = {"curve": curve, "scaling": metrics.scaling([(x, y) for x, y in xy if x > 0]),
                              "performance": metrics.performance(xy)}
        summary["majority"] = maj
    return summary


def majority_rows(point: dict, records: list[dict], a_min=None, a_max=None, curve=None) -> list[dict]:
    """One summary row per k of a majority point: accuracy of the majority answer of samples
    0..k-1 (s1/evaluation/metrics.py: grader-equivalence groups, ties -> first drawn), compute = mean over
    questions of the total thinking tokens of those k samples, mean_thinking_tokens = per sample
    (what Control checks against the point's cap)."""
    K = min(sum(1 for r in records if r["qid"] == q) for q in {r["qid"] for r in records})
    rows = []
    for c in (metrics.majority_curve(records) if curve is None else curve):
        used = [r for r in records if r["sample"] < c["k"]]
        stats = metrics.point_stats(used, a_min, a_max)
        rows.append(point | stats | {
            "name": f"{point['name']}/k={c['k']}", "k": c["k"], "samples_drawn": K,
            "accuracy": c["accuracy"], "compute": c["compute"], "pass@1": stats["accuracy"]})
    return rows


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(v, pct=False, digits=1) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.{digits}f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _limits(r: dict) -> str:
    lo, hi = r.get("a_min"), r.get("a_max")
    if lo is None and hi is None:
        return "-"
    if lo is None:
        return f"<= {_fmt(hi, digits=0)}"
    if hi is None:
        return f">= {_fmt(lo, digits=0)}"
    return f"{_fmt(lo, digits=0)}..{_fmt(hi, digits=0)}"


def _setting(r: dict) -> str:
    s = r.get("variant", "") + (f" k={r['k']}" if "k" in r else "")
    if "mean_attempts" in r:
        s += f"; {r['mean_attempts']:.1f} tries/question (max {r['max_attempts_used']}), {r['never_fit']} never fit"
    return s.strip() or "-"


def summary_markdown(summary: dict) -> str:
    """Per-point table, then the method comparison (the paper's Table 3 columns plus the per-run
    Control and the thinking tokens per point)."""
    lines = [f"## {summary['task']}: {summary['num_questions']} questions, {summary['samples']} sample(s)/point, "
             f"temperature {summary['temperature']}, model `{summary['model']}`", "",
             "| method | max thinking | wait | setting | accuracy % | mean thinking tokens | compute | limits | "
             "Control | Control (runs) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["points"]:
        cap = "none" if r["max_thinking_tokens"] is None else r["max_thinking_tokens"]
        if r.get("thinking") is False:
            cap = "no thinking"
        if r.get("clipped_runs"):
            cap = f"{cap} (clipped: {_fmt(r['context_thinking_limit'], digits=0)})"
        lines.append(f"| {r['method']} | {cap} | {r['num_wait']} | {_setting(r)} | {r['accuracy']:.1f} | "
                     f"{r['mean_thinking_tokens']:.1f} | {r['compute']:.1f} | {_limits(r)} | "
                     f"{_fmt(r['control'], pct=True, digits=0)} | {_fmt(r['control_runs'], pct=True)} |")
    lines += ["", "| method | Control | Control (runs) | Scaling (acc pts per 2x compute) | Performance % | "
                  "mean thinking tokens per point | compute per point |", "|---|---|---|---|---|---|---|"]
    for m, v in summary["methods"].items():
        think = " / ".join(f"{x:.1f}" for x in v.get("mean_thinking_tokens", []))
        comp = " / ".join(f"{x:.1f}" for x in v.get("compute", []))
        lines.append(f"| {m} | {_fmt(v['control'], pct=True)} | {_fmt(v['control_runs'], pct=True)} | "
                     f"{_fmt(v['scaling'])} | {_fmt(v['performance'])} | {think or '-'} | {comp or '-'} |")
    notes = []
    if "ccc_bound" in summary:
        notes.append(f"ccc: short and long are bounded by the default run's {summary['ccc_bound']:.1f} mean "
                     "thinking tokens (short at most, long at least).")
    notes.append("Control: share of settings whose mean thinking tokens lie within their limits; Control (runs): "
                 "share of single runs within them.")
    if summary.get("graders"):
        from s1.evaluation.grading import agreement_markdown
        notes.append(agreement_markdown(summary["graders"]))
    if summary.get("graders_mathverify"):
        m = summary["graders_mathverify"]
        notes.append(f"Graders on {m['task']}: rule grader vs Math-Verify: agree on {m['agree']}/{m['records']} "
                     f"({100 * m['agreement']:.1f}%); rules-only {m['rules_only']}, "
                     f"Math-Verify-only {m['mathverify_only']}.")
    if any(r.get("compute_of") == "output tokens" for r in summary["points"]):
        notes.append("Plain chat (--no-think): no thinking phase; its mean thinking tokens and compute are "
                     "output tokens.")
    clipped = [r for r in summary["points"] if r.get("clipped_runs")]
    if clipped:
        notes.append("Clipped budgets: " + "; ".join(
            f"{r['name']}: {r['clipped_runs']}/{r['runs']} runs had more budget than the context holds (at most "
            f"{_fmt(r['context_thinking_limit'], digits=0)} thinking tokens), so the context stopped them"
            for r in clipped) + ". Their points measure the context, not the budget.")
    lines += [""] + notes
    tries = [r for r in summary["points"] if "mean_attempts" in r]
    if tries:
        lines += ["", "| rejection sampling budget | tries per question (mean) | tries (max) | never fit | "
                      "accepted samples' mean thinking tokens | accuracy % |", "|---|---|---|---|---|---|"]
        for r in tries:
            lines.append(f"| {r['max_thinking_tokens']} | {r['mean_attempts']:.1f} | {r['max_attempts_used']} | "
                         f"{r['never_fit']} | {r['mean_thinking_tokens']:.1f} | {r['accuracy']:.1f} |")
        lines += ["", "s1 needed 655, 97, 8, 3, 2 and 1 tries per question on average at budgets 3500, 4000, "
                      "5000, 6000, 8000 and 16000 (s1-32B, AIME24)."]
    if "majority" in summary:
        lines += ["", "| majority voting at point | k | accuracy % | compute (total thinking tokens) |",
                  "|---|---|---|---|"]
        for name, v in summary["majority"].items():
            for c in v["curve"]:
                lines.append(f"| {name} | {c['k']} | {c['accuracy']:.1f} | {c['compute']:.1f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_outputs(out_dir: str, records: list[dict] | None, config: dict, summary: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if records is not None:
        write_jsonl(os.path.join(out_dir, "samples.jsonl"), records)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
    try:
        from s1.evaluation.plots import plot_scaling

        plot_scaling(summary, os.path.join(out_dir, "scaling.png"))
    except ImportError as e:  # matplotlib missing: the numbers are still written
        print(f"warning: no plot ({e})", file=sys.stderr)


def rescore(run_dir: str, out_dir: str | None = None, grading: str | None = None, judge=None) -> dict:
    """Re-extract and re-grade a finished run's samples.jsonl; rewrite the summary files.
    grading: "rules" or "s1" (s1/evaluation/grading.py; default: the run's, else "rules"); judge:
    a s1/evaluation/judge.py Judge for s1's procedure and the graders' agreement."""
    cfg_path, samples_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "samples.jsonl")
    for p in (cfg_path, samples_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"--rescore {run_dir!r}: missing {os.path.basename(p)} (not a finished s1 eval run?)")
    with open(cfg_path) as f:
        config = json.load(f)
    from s1.evaluation.grading import agreement, grade_records, mathverify_agreement   # records -> grades

    grading = grading or config.get("grading", "rules")
    records = grade_records(list(read_jsonl(samples_path)), grading, judge)
    if grading != "rules" or judge is not None:
        config = dict(config, grading=grading, judge=getattr(judge, "name", None))
    summary = summarize(records, config["points"], meta_of(config))
    if any("s1" in r for r in records):
        summary["graders"] = agreement(records, config["task"], getattr(judge, "name", None))
    if any("mathverify" in r for r in records):
        summary["graders_mathverify"] = mathverify_agreement(records, config["task"])
    write_outputs(out_dir or run_dir, records, config, summary)
    return summary
