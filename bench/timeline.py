"""`s1 bench timeline FILE`: plot a step timeline (`--timeline FILE` of generate/eval/serve/train)
and write its summary table.

    s1 bench timeline run.timeline.jsonl                 # -> run.timeline.png and run.timeline.md
    s1 bench timeline run.timeline.jsonl --out DIR/name  # -> DIR/name.png, DIR/name.md

The plot stacks each step's host time per phase (s1/common/profiling.py) and draws the step's
device time (CUDA events; absent on CPU, where the device work runs inside the host phases) over
it: where the host bars stand above the device line, the host is on the critical path. A second
panel shows the batch size. The table gives, per kind of step (prefill, decode, train) and per
phase, the mean and p90 host ms per step and the phase's share of the host step time, then the
mean device ms and the share of steps whose host time (less the time spent waiting for the
device) exceeds their device time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from s1.common.cli import HelpFormatter

WAIT_PHASES = ("wait_device",)       # host time spent waiting for the device, not host work


def read_timeline(path: str) -> tuple[dict, list[dict]]:
    """(header, step records); ValueError naming the problem."""
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty (no header line)")
    try:
        rows = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON lines ({e})") from None
    head = rows[0]
    if not isinstance(head, dict) or "timeline" not in head:
        raise ValueError(f"{path}: not a timeline (its first line has no 'timeline' version; "
                         "write one with --timeline FILE)")
    steps = rows[1:]
    for r in steps:
        for k in ("step", "wall_ms", "phases_ms"):
            if k not in r:
                raise ValueError(f"{path}: step record without {k!r}: {r}")
    return head, steps


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else 0.0


def phase_order(head: dict, steps: list[dict]) -> list[str]:
    known = list(head.get("engine_phases", [])) + list(head.get("train_phases", []))
    seen = {k for r in steps for k in r["phases_ms"]}
    return [p for p in known if p in seen] + sorted(seen - set(known))


def summarize(head: dict, steps: list[dict]) -> dict:
    """Per kind: steps, mean wall ms, per phase mean/p90 ms and share, device mean, host-bound share."""
    phases = phase_order(head, steps)
    out = {}
    kinds = sorted({r.get("kind") or "other" for r in steps})
    for kind in kinds + ["all"]:
        rs = steps if kind == "all" else [r for r in steps if (r.get("kind") or "other") == kind]
        if not rs:
            continue
        wall = [r["wall_ms"] for r in rs]
        total = sum(wall) or 1e-12
        per = {}
        for p in phases + ["(other)"]:
            if p == "(other)":
                xs = [max(0.0, r["wall_ms"] - sum(r["phases_ms"].values())) for r in rs]
            else:
                xs = [r["phases_ms"].get(p, 0.0) for r in rs]
            per[p] = {"mean_ms": statistics.fmean(xs), "p90_ms": _p(xs, 0.9), "share": sum(xs) / total}
        dev = [r["device_ms"] for r in rs if r.get("device_ms") is not None]
        host_work = [r["wall_ms"] - sum(r["phases_ms"].get(w, 0.0) for w in WAIT_PHASES) for r in rs
                     if r.get("device_ms") is not None]
        out[kind] = {"steps": len(rs), "wall_mean_ms": statistics.fmean(wall), "wall_p90_ms": _p(wall, 0.9),
                     "batch_mean": statistics.fmean([r.get("batch") or 0 for r in rs]),
                     "tokens": sum(r.get("tokens") or 0 for r in rs), "phases": per,
                     "device_mean_ms": statistics.fmean(dev) if dev else None,
                     "host_bound_share": (sum(h > d for h, d in zip(host_work, dev)) / len(dev)) if dev else None}
    return out


def table(head: dict, summary: dict, src: str) -> str:
    prov = head.get("provenance") or {}
    lines = [f"# Step timeline: {os.path.basename(src)}", "",
             f"{head.get('label', '?')} on {head.get('device', '?')}; commit {prov.get('commit')}"
             f"{' (dirty)' if prov.get('dirty') else ''}, torch {prov.get('torch')}, {prov.get('date')}", ""]
    for kind, s in summary.items():
        dev = s["device_mean_ms"]
        lines += [f"## {kind}: {s['steps']} steps, mean batch {s['batch_mean']:.1f}, {s['tokens']} tokens", "",
                  f"host step: mean {s['wall_mean_ms']:.3f} ms, p90 {s['wall_p90_ms']:.3f} ms; device: "
                  + (f"mean {dev:.3f} ms; host work > device time in {100 * s['host_bound_share']:.0f}% of steps"
                     if dev is not None else "not measured (CPU: the device work runs inside the host phases)"),
                  "", "| phase | mean ms | p90 ms | share of host step |", "|---|---:|---:|---:|"]
        for p, v in s["phases"].items():
            if v["mean_ms"] == 0 and p != "(other)":
                continue
            lines.append(f"| {p} | {v['mean_ms']:.3f} | {v['p90_ms']:.3f} | {100 * v['share']:.1f}% |")
        lines.append("")
    return "\n".join(lines)


def plot(head: dict, steps: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    phases = phase_order(head, steps)
    x = [r["step"] for r in steps]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    cmap = plt.get_cmap("tab10" if len(phases) <= 10 else "tab20")
    bottom = [0.0] * len(steps)
    width = 1.0
    for i, p in enumerate(phases + ["(other)"]):
        if p == "(other)":
            ys = [max(0.0, r["wall_ms"] - sum(r["phases_ms"].values())) for r in steps]
            color = "0.8"
        else:
            ys = [r["phases_ms"].get(p, 0.0) for r in steps]
            color = cmap(i % cmap.N)
        ax.bar(x, ys, width=width, bottom=bottom, color=color, label=f"host: {p}", linewidth=0)
        bottom = [b + y for b, y in zip(bottom, ys)]
    dev = [(r["step"], r["device_ms"]) for r in steps if r.get("device_ms") is not None]
    if dev:
        ax.plot([d[0] for d in dev], [d[1] for d in dev], color="black", lw=1.2, marker=".", ms=3,
                label="device (CUDA events)")
        title_dev = "black line: device time"
    else:
        title_dev = "CPU run: no device line, the device work is inside the host phases"
    ax.set_ylabel("ms per step")
    ax.set_title(f"{head.get('label', '')} on {head.get('device', '?')}: host time per phase, stacked; {title_dev}",
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    bx.bar(x, [r.get("batch") or 0 for r in steps], width=width, color="steelblue", linewidth=0,
           label="decode (or train) steps")
    prefill = [r["step"] for r in steps if r.get("kind") == "prefill"]
    if prefill:
        bx.bar(prefill, [next(s.get("batch") or 0 for s in steps if s["step"] == p) for p in prefill],
               width=width, color="tab:orange", linewidth=0, label="prefill steps")
    bx.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bx.set_ylabel("batch")
    bx.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 bench timeline", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="a --timeline FILE (JSON lines)")
    p.add_argument("--out", default=None, help="output prefix (PREFIX.png, PREFIX.md); default: FILE without .jsonl")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        head, steps = read_timeline(a.file)
    except (OSError, ValueError) as e:
        print(f"s1 bench timeline: {e}", file=sys.stderr)
        return 2
    if not steps:
        print(f"s1 bench timeline: {a.file}: no steps recorded", file=sys.stderr)
        return 2
    prefix = a.out or (a.file[:-len(".jsonl")] if a.file.endswith(".jsonl") else a.file)
    if os.path.dirname(prefix):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
    summary = summarize(head, steps)
    md = table(head, summary, a.file)
    with open(prefix + ".md", "w", encoding="utf-8") as f:
        f.write(md)
    plot(head, steps, prefix + ".png")
    print(md)
    print(f"wrote {prefix}.png and {prefix}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
