"""Scaling-curve plot: accuracy vs mean thinking tokens (log2 x axis, as s1's Figures 1 and 4).

One solid curve per method (points ordered by compute), one dashed curve per majority-voting
point (compute = total thinking tokens of the k votes). Uses the Agg backend (no display).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_scaling(summary: dict, path: str, title: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    xs_all = []
    for method in summary["methods"]:
        rows = sorted((r for r in summary["points"] if r["method"] == method), key=lambda r: r["compute"])
        xs = [max(r["compute"], 1.0) for r in rows]  # log axis: a zero-token point is drawn at 1
        ys = [r["accuracy"] for r in rows]
        xs_all += xs
        ax.plot(xs, ys, marker="o", label=method)
        for r, x, y in zip(rows, xs, ys):
            cap = "none" if r["max_thinking_tokens"] is None else r["max_thinking_tokens"]
            tag = f"{cap}" + (f"+{r['num_wait']}W" if r["num_wait"] else "")
            if "k" in r:                     # majority@k point: the vote size is the setting
                tag = f"k={r['k']}"
            elif r.get("variant") in ("short", "long"):
                tag = r["variant"]
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    # Majority voting curves: at most 3 (the last points of the sweep) to keep the plot readable.
    for name, maj in list(summary.get("majority", {}).items())[-3:]:
        xs = [max(c["compute"], 1.0) for c in maj["curve"]]
        xs_all += xs
        ax.plot(xs, [c["accuracy"] for c in maj["curve"]], marker="s", linestyle="--",
                label=f"majority@k ({name})")
    if xs_all and max(xs_all) / min(xs_all) > 1.5:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("thinking tokens per question (log2; rs: all attempts, majority: all k samples)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"{summary['task']}: {summary['num_questions']} questions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
