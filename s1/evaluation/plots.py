"""Scaling-curve plot: accuracy against the thinking tokens actually used (as the s1 paper's
Figures 1 and 4), one curve per method, dashed curves for majority voting.

What a reader sees, without the code:
- x: mean thinking tokens per question (majority@k curves: the total over its k samples), on a
  log2 axis; a setting that used 0 thinking tokens cannot sit on a log axis, so when there is one
  the axis is linear between 0 and the smallest positive value (a "0" tick marks it, and the
  caption says so);
- y: accuracy in percent;
- the small number next to each point is the setting's cap on thinking tokens ("auto": the cap
  from the context, "none": uncapped; "+2W": two forced "Wait" extensions; "k=4": majority of 4
  votes; short / long / default: class-conditional prompts); the caption under the axes says so;
- a budget above what the context holds (the context stopped the thinking, not the budget) is
  ringed in red and its label ends in "*";
- labels are placed so that they do not overlap each other;
- points that would be drawn on top of each other (two settings at the same compute and accuracy,
  e.g. budget 16 and 16 + one "Wait" that was never used) are spread sideways by a few points, so
  every setting stays visible; the caption says so;
- the accuracy axis spans at least 10 points within [0, 100] (a sweep where every accuracy is 0
  shows 0 to 10, not -0.04 to 0.04).
Uses the Agg backend (no display).
"""
from __future__ import annotations

import textwrap

import matplotlib
from matplotlib import transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Label offsets (points) tried in order until a label overlaps no earlier label.
_OFFSETS = [(4, 5), (4, -11), (-4, 5), (-4, -11), (4, 15), (4, -21), (-4, 15), (-4, -21), (10, 25),
            (10, -31), (-10, 25), (-10, -31), (14, 35), (14, -41)]


def point_tag(r: dict) -> str:
    """The short label of one summary row (a setting)."""
    if "k" in r:                          # a majority@k row: the vote size is the setting
        return f"k={r['k']}"
    if r.get("method") == "ccc":
        return r.get("variant") or "ccc"
    if r.get("thinking") is False:
        return "no think"
    cap = "none" if r["max_thinking_tokens"] is None else str(r["max_thinking_tokens"])
    return cap + (f"+{r['num_wait']}W" if r.get("num_wait") else "") + ("*" if r.get("clipped_runs") else "")


def _series(summary: dict) -> list[dict]:
    out = []
    for method in summary["methods"]:
        rows = sorted((r for r in summary["points"] if r["method"] == method), key=lambda r: r["compute"])
        out.append({"label": method, "x": [r["compute"] for r in rows], "y": [r["accuracy"] for r in rows],
                    "tags": [point_tag(r) for r in rows], "style": dict(marker="o"),
                    "clipped": [bool(r.get("clipped_runs")) for r in rows]})
    # Majority voting curves of a sweep with several samples per point: at most 3 (the last points).
    rows = {r["name"]: r for r in summary["points"]}
    for name, maj in list(summary.get("majority", {}).items())[-3:]:
        where = f"{rows[name]['method']} at {point_tag(rows[name])}" if name in rows else name
        out.append({"label": f"majority@k, {where}", "x": [c["compute"] for c in maj["curve"]],
                    "y": [c["accuracy"] for c in maj["curve"]], "tags": [f"k={c['k']}" for c in maj["curve"]],
                    "style": dict(marker="s", linestyle="--"), "majority": True})
    return out


def accuracy_limits(ys: list[float], min_span: float = 10.0) -> tuple[float, float]:
    """The accuracy axis: the data with a margin, at least `min_span` points wide, inside [0, 100]
    (plus a sliver below 0 / above 100 so points on the edge are not cut in half)."""
    lo, hi = min(ys), max(ys)
    pad = max((hi - lo) * 0.1, (min_span - (hi - lo)) / 2, 0.0)
    lo, hi = lo - pad, hi + pad
    if lo < 0:
        lo, hi = 0.0, min(100.0, max(hi - lo, min_span))
    if hi > 100:
        lo, hi = max(0.0, min(lo - (hi - 100), 100 - min_span)), 100.0
    edge = 0.02 * (hi - lo)
    return lo - edge, hi + edge


def _dodge(fig, ax, series: list[dict], lines) -> int:
    """Spread points drawn within 5 pixels of each other sideways (7 points apart, centred on the
    true position); their markers move, the line keeps the true position. Returns how many
    points moved."""
    to_px = ax.transData
    ax.get_xlim()                                # settle the autoscaled limits
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for si, s in enumerate(series):
        for pi, (x, y) in enumerate(zip(s["x"], s["y"])):
            px, py = to_px.transform((x, y))
            groups.setdefault((round(px / 5), round(py / 5)), []).append((si, pi))
    moved = 0
    hidden: dict[int, list[int]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for k, (si, pi) in enumerate(members):
            dx = (k - (len(members) - 1) / 2) * 7
            s, line = series[si], lines[si]
            shift = transforms.offset_copy(ax.transData, fig=fig, x=dx, y=0, units="points")
            ax.plot([s["x"][pi]], [s["y"][pi]], transform=shift, linestyle="none", color=line.get_color(),
                    marker=line.get_marker(), markersize=line.get_markersize(), zorder=line.get_zorder() + 1)
            hidden.setdefault(si, []).append(pi)
            moved += 1
    for si, idx in hidden.items():               # the line keeps its markers elsewhere only
        keep = [i for i in range(len(series[si]["x"])) if i not in idx]
        lines[si].set_markevery(keep)
    return moved


def _overlaps(box, placed) -> bool:
    return any(box.overlaps(b) for b in placed)


def draw_scaling(summary: dict, title: str | None = None):
    """-> (figure, axes, labels): labels are the point annotations (matplotlib Text objects),
    placed without overlaps."""
    series = _series(summary)
    fig, ax = plt.subplots(figsize=(7.6, 5.2), dpi=120)
    xs = [x for s in series for x in s["x"]]
    positive = [x for x in xs if x > 0]
    has_zero = any(x <= 0 for x in xs)
    lines = [ax.plot(s["x"], s["y"], label=s["label"], **s["style"])[0] for s in series]
    any_clipped = False
    for s in series:
        cx = [(x, y) for x, y, c in zip(s["x"], s["y"], s.get("clipped", [])) if c]
        if cx:   # budgets above what the context holds: ringed in red
            any_clipped = True
            ax.scatter([x for x, _ in cx], [y for _, y in cx], s=140, facecolors="none", edgecolors="red",
                       linewidths=1.2, zorder=5, label="budget clipped by the context" if not any(
                           t.get_label() == "budget clipped by the context" for t in ax.collections) else None)
    if positive and (has_zero or max(positive) / min(positive) > 1.5):
        if has_zero:   # linear from 0 to the smallest positive value, log2 above it
            ax.set_xscale("symlog", base=2, linthresh=min(positive), linscale=0.5)
        else:
            ax.set_xscale("log", base=2)
    ys = [y for s in series for y in s["y"]]
    if ys:
        lo, hi = accuracy_limits(ys)
        ax.set_ylim(lo, hi)
    dodged = _dodge(fig, ax, series, lines)
    majority = any(s.get("majority") or any(t.startswith("k=") for t in s["tags"]) for s in series)
    ax.set_xlabel("thinking tokens per question (mean)" + (", log2 axis" if ax.get_xscale() != "linear" else ""))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"{summary['task']}: {summary['num_questions']} questions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    notes = ["Small numbers at the points: the setting's cap on thinking tokens (auto: s1's cap from the context; "
             "none: uncapped; +nW: n forced \"Wait\"s; k=: majority of k votes)."]
    if majority:
        notes.append("Majority@k: x is the total thinking tokens of its k samples.")
    if any(r.get("compute_of") == "output tokens" for r in summary["points"]):
        notes.append("Plain chat (no thinking phase): x counts its output tokens.")
    if any_clipped:
        notes.append("* / red ring: the budget is more than the context holds, so the context, not the budget, "
                     "stopped the thinking (see summary.md).")
    if has_zero:
        notes.append("x = 0: no thinking at all (the axis is linear from 0 to the first point above 0).")
    if dodged:
        notes.append("Points at the same compute and accuracy are drawn side by side (shifted a few pixels).")
    caption = "\n".join(textwrap.fill(n, 120) for n in notes)
    fig.text(0.01, 0.01, caption, fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 + 0.025 * caption.count("\n"), 1, 1))
    renderer = fig.canvas.get_renderer()
    placed = [ax.get_legend().get_window_extent(renderer)]
    labels = []
    for s in series:
        for x, y, tag in zip(s["x"], s["y"], s["tags"]):
            for dx, dy in _OFFSETS:
                t = ax.annotate(tag, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                                ha="left" if dx >= 0 else "right")
                box = t.get_window_extent(renderer).expanded(1.05, 1.1)
                if not _overlaps(box, placed) or (dx, dy) == _OFFSETS[-1]:
                    break
                t.remove()
            placed.append(box)
            labels.append(t)
    return fig, ax, labels


def plot_scaling(summary: dict, path: str, title: str | None = None) -> str:
    fig, _, _ = draw_scaling(summary, title)
    fig.savefig(path)
    plt.close(fig)
    return path
