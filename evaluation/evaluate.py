"""`s1 eval`: benchmark sweeps over thinking budgets with budget forcing (s1-reference §3-4).

    s1 eval --model DIR --task aime24 --budgets 512,1024,2048,4096 --num-wait 0 --out runs/aime24
    s1 eval --rescore runs/aime24            # re-grade a finished run, no generation

Sweep = methods x budgets x num_wait (x samples). Every request of the sweep, (question, point,
sample), goes to ONE `LLM.generate` call, so the engine batches across points and questions.

Outputs in --out:
- config.json   the sweep definition (points in order, task, model, settings)
- samples.jsonl one line per run: qid, point, sample, the engine output (text, thinking, answer),
                extracted answer, correct, thinking tokens, waits used, finish reason, limits
- summary.json  accuracy / mean thinking tokens / control per point; Control, Scaling,
                Performance per method; majority@k per point when --samples > 1
- summary.md    the same as markdown tables
- scaling.png   accuracy vs mean thinking tokens (log2 axis), one curve per method (+ majority)
- timing.json   generation wall time and token throughput (kept out of summary.json so that a
                re-score reproduces summary.json byte for byte)

Methods are prompt/param transforms: `METHODS[name](question, point) -> (question, params)`.
Budget forcing passes the question through and sets the engine's budget-forcing fields; issue 8's
token-/step-/class-conditional prompts and rejection sampling plug in as further entries.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from typing import Callable

from evaluation import methods, metrics
from evaluation.grader import extract_answer, grade
from evaluation.tasks import TaskError, TaskItem, choice_options, load_task
from common.jsonl import read_jsonl, write_jsonl

# --------------------------------------------------------------------------------------------
# Sweep points and methods
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """One setting of a sweep. `max_thinking_tokens=None` means no cap.

    max/min_thinking_tokens are the point's *nominal* limits (its budget): Control is measured
    against them, and prompt-based methods state them in the prompt. Whether the engine also
    enforces them is the method's choice (METHODS). Method-specific settings live here too, so
    config.json records them: `variant` (scc step count, ccc class, rs/majority settings),
    `samples` (majority: K), `temperature` (None: the sweep's --temperature), `max_attempts` (rs).
    """

    method: str = "budget_forcing"
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int = 0
    num_wait: int = 0
    variant: str = ""
    samples: int = 1
    temperature: float | None = None
    max_attempts: int = 1

    @property
    def name(self) -> str:
        cap = "none" if self.max_thinking_tokens is None else str(self.max_thinking_tokens)
        s = f"{self.method}/max={cap}/wait={self.num_wait}"
        s += f"/min={self.min_thinking_tokens}" if self.min_thinking_tokens else ""
        return s + (f"/{self.variant}" if self.variant else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"name": self.name}


def budget_forcing(question: str, point: EvalPoint) -> tuple[str, dict]:
    """s1's budget forcing: the bare question; the engine caps thinking at max (forced
    end-of-thinking + "Final Answer:") and replaces up to num_wait early ends by "Wait"."""
    return question, {
        "max_thinking_tokens": point.max_thinking_tokens,
        "min_thinking_tokens": point.min_thinking_tokens,
        "num_wait": point.num_wait,
    }


def _need_budget(point: EvalPoint) -> int:
    if point.max_thinking_tokens is None:
        raise ValueError(f"{point.method} states its budget in the prompt: it needs a finite budget, not 'none'")
    return point.max_thinking_tokens


def _uncapped(point: EvalPoint) -> dict:
    """Engine params of a method that does not force anything: no thinking limits at all."""
    return {"max_thinking_tokens": None, "min_thinking_tokens": 0, "num_wait": 0}


def token_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    """"Think for up to N tokens." in the prompt (evaluation/methods.py); the model alone decides."""
    return methods.render_tcc(question, _need_budget(point)), _uncapped(point)


def token_conditional_bf(question: str, point: EvalPoint) -> tuple[str, dict]:
    """Token-conditional prompt + budget forcing at the same N."""
    return methods.render_tcc(question, _need_budget(point)), budget_forcing(question, point)[1]


def _steps(point: EvalPoint) -> int:
    if not point.variant.startswith("steps="):
        raise ValueError(f"step-conditional point {point.name!r} has no steps=N variant (use make_points)")
    return int(point.variant.split("=", 1)[1])


def step_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    """"Think for up to S steps." (S = budget // step_tokens, in point.variant); no engine cap."""
    _need_budget(point)
    return methods.render_scc(question, _steps(point)), _uncapped(point)


def step_conditional_bf(question: str, point: EvalPoint) -> tuple[str, dict]:
    """Step-conditional prompt + budget forcing at the point's budget in tokens."""
    _need_budget(point)
    return methods.render_scc(question, _steps(point)), budget_forcing(question, point)[1]


def class_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    """Generic short / long thinking prompt (class in point.variant); no engine cap."""
    return methods.render_ccc(question, point.variant), _uncapped(point)


def rejection_sampling(question: str, point: EvalPoint) -> tuple[str, dict]:
    """The bare question, sampled without limits; run_eval resamples runs whose thinking exceeds
    the budget (up to point.max_attempts attempts)."""
    _need_budget(point)
    return question, _uncapped(point)


def majority(question: str, point: EvalPoint) -> tuple[str, dict]:
    """K samples with budget forcing at the point's budget (None = uncapped); summarize() turns
    them into majority@k points."""
    return budget_forcing(question, point)


# name -> transform(question, point) -> (question shown to the model, SamplingParams overrides)
METHODS: dict[str, Callable[[str, EvalPoint], tuple[str, dict]]] = {
    "budget_forcing": budget_forcing,
    "tcc": token_conditional,
    "tcc+bf": token_conditional_bf,
    "scc": step_conditional,
    "scc+bf": step_conditional_bf,
    "ccc": class_conditional,
    "rs": rejection_sampling,
    "majority": majority,
}


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Settings of the non-budget-forcing methods (CLI: --step-tokens, --ccc-budgets, --rs-*, --majority-*)."""

    step_tokens: int = methods.DEFAULT_STEP_TOKENS
    ccc_budgets: tuple[int, int] | None = None   # (short, long) nominal limits; default from the sweep
    rs_max_attempts: int = 8
    rs_temperature: float = 1.0
    majority_k: int = 16
    majority_budget: int | None = None           # None: no cap
    majority_temperature: float = 1.0


def make_points(methods_: list[str], budgets: list[int | None], num_waits: list[int],
                min_thinking_tokens: int = 0, opts: MethodOptions | None = None) -> list[EvalPoint]:
    """Sweep points. budget_forcing (and the +bf methods) cross budgets with num_waits; the prompt
    methods use num_wait 0; ccc has two points (short, long) whose nominal limits are
    opts.ccc_budgets (default: the median and the largest finite budget; long also has the short
    one as its minimum); majority is one K-sample point (expanded to k = 1, 2, 4..K in summaries)."""
    opts = opts or MethodOptions()
    for m in methods_:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    if opts.step_tokens < 1 or opts.rs_max_attempts < 1 or opts.majority_k < 1:
        raise ValueError("--step-tokens, --rs-max-attempts and --majority-k must be >= 1")
    finite = sorted(b for b in budgets if b is not None)
    pts = []
    for m in methods_:
        if m in ("budget_forcing", "tcc+bf", "scc+bf"):
            for b in budgets:
                for w in num_waits:
                    variant = f"steps={methods.steps_for_budget(_need_budget(EvalPoint(m, b)), opts.step_tokens)}" \
                        if m == "scc+bf" else ""
                    pts.append(EvalPoint(m, b, min_thinking_tokens, w, variant))
        elif m in ("tcc", "scc", "rs"):
            for b in budgets:
                p = EvalPoint(m, b)
                _need_budget(p)
                if m == "scc":
                    p = dataclasses.replace(p, variant=f"steps={methods.steps_for_budget(b, opts.step_tokens)}")
                if m == "rs":
                    p = dataclasses.replace(p, temperature=opts.rs_temperature, max_attempts=opts.rs_max_attempts,
                                            variant=f"attempts<={opts.rs_max_attempts}")
                pts.append(p)
        elif m == "ccc":
            if opts.ccc_budgets is not None:
                lo, hi = opts.ccc_budgets
            elif finite:
                lo, hi = finite[(len(finite) - 1) // 2], finite[-1]
            else:
                raise ValueError("ccc needs finite budgets (or --ccc-budgets SHORT,LONG) to measure Control")
            if not 0 <= lo <= hi:
                raise ValueError(f"--ccc-budgets: need 0 <= short <= long, got {lo},{hi}")
            pts += [EvalPoint(m, lo, 0, 0, "short"), EvalPoint(m, hi, lo, 0, "long")]
        elif m == "majority":
            pts.append(EvalPoint(m, opts.majority_budget, 0, 0, f"K={opts.majority_k}", samples=opts.majority_k,
                                 temperature=opts.majority_temperature))
    names = [p.name for p in pts]
    if len(set(names)) != len(names):
        raise ValueError("duplicate sweep points (repeated values in --budgets / --num-wait?)")
    return pts


def request_seed(seed: int, qid: str, point: str, sample: int) -> int:
    """Per-request sampling seed, stable across batch composition (hash of the request identity)."""
    h = hashlib.sha256(f"{seed}|{qid}|{point}|{sample}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------------


def build_requests(items: list[TaskItem], points: list[EvalPoint], samples: int, temperature: float,
                   seed: int, base_params: dict, sampling_params_cls) -> tuple[list[str], list, list[dict]]:
    """All (question, point, sample) requests -> prompts, SamplingParams, and record stubs.

    A point with samples > 1 (majority) draws that many samples, others `samples`; a point's own
    temperature (rs, majority) overrides the sweep's. Stubs carry the point's nominal limits
    (Control is measured against them) and the engine's cap separately."""
    prompts, params, stubs = [], [], []
    for point in points:
        transform = METHODS[point.method]
        n_samples = point.samples if point.samples > 1 else samples
        temp = temperature if point.temperature is None else point.temperature
        for item in items:
            question, overrides = transform(item.question, point)
            for s in range(n_samples):
                kw = dict(base_params)
                kw.update(overrides)
                kw["temperature"] = temp
                kw["seed"] = request_seed(seed, item.id, point.name, s)
                prompts.append(question)
                params.append(sampling_params_cls(**kw))
                stubs.append({
                    "qid": item.id, "point": point.name, "method": point.method, "sample": s,
                    "reference": item.answer, "kind": item.kind,
                    "max_thinking_tokens": point.max_thinking_tokens,
                    "min_thinking_tokens": point.min_thinking_tokens,
                    "engine_max_thinking_tokens": kw.get("max_thinking_tokens"),
                    "num_wait": kw.get("num_wait", 0),
                })
                if item.kind == "choice":  # lets the grader map an answer naming an option's text
                    stubs[-1]["choices"] = choice_options(item.question)
    return prompts, params, stubs


def rejection_rounds(llm, prompts: list, params: list, records: list[dict], points: list[EvalPoint],
                     seed: int, make_record) -> int:
    """Rejection sampling (method "rs"): resample every rs run whose thinking exceeds its point's
    budget, all pending runs in one batched engine call per round, until it fits or has made
    point.max_attempts attempts (then the last attempt is kept, rs_accepted False, and Control
    counts it as out of budget). Each record gets `attempts`, `attempt_thinking_tokens` and
    `compute_tokens` = the thinking tokens of ALL its attempts. Returns the number of extra rounds."""
    cap = {p.name: p.max_attempts for p in points if p.method == "rs"}

    def fits(r):
        return r["finish_reason"] != "error" and r["thinking_tokens"] <= r["max_thinking_tokens"]

    pending = []
    for i, r in enumerate(records):
        if r["point"] in cap:
            r.update(attempts=1, attempt_thinking_tokens=[r["thinking_tokens"]],
                     compute_tokens=r["thinking_tokens"], rs_accepted=fits(r))
            if not r["rs_accepted"] and cap[r["point"]] > 1:
                pending.append(i)
    rounds = 0
    while pending:
        rounds += 1
        attempt = rounds + 1
        retry = [dataclasses.replace(params[i], seed=request_seed(
            seed, records[i]["qid"], f"{records[i]['point']}/attempt={attempt}", records[i]["sample"]))
            for i in pending]
        print(f"rejection sampling: attempt {attempt} for {len(pending)} run(s)", file=sys.stderr)
        outs = llm.generate([prompts[i] for i in pending], retry)
        if len(outs) != len(pending):
            raise RuntimeError(f"engine returned {len(outs)} outputs for {len(pending)} prompts")
        still = []
        for i, out in zip(pending, outs):
            old = records[i]
            new = make_record(i, out)
            tts = old["attempt_thinking_tokens"] + [new["thinking_tokens"]]
            new.update(attempts=attempt, attempt_thinking_tokens=tts, compute_tokens=sum(tts), rs_accepted=fits(new))
            records[i] = new
            if not new["rs_accepted"] and attempt < cap[new["point"]]:
                still.append(i)
        pending = still
    return rounds


def score_record(rec: dict) -> dict:
    """(Re-)extract and grade one run from its stored output text."""
    source = rec.get("answer_text")
    if source is None:
        source = rec.get("text", "")
    rec["extracted"] = extract_answer(source, rec["kind"], rec.get("choices"))
    rec["correct"] = bool(grade(rec["extracted"], rec["reference"], rec["kind"]))
    return rec


def _output_fields(out) -> dict:
    ids = getattr(out, "output_token_ids", None)
    return {
        "text": getattr(out, "text", ""),
        "thinking": getattr(out, "thinking", None),
        "answer_text": getattr(out, "answer", None),
        "thinking_tokens": int(getattr(out, "num_thinking_tokens", 0)),
        "output_tokens": len(ids) if ids is not None else None,
        "waits_used": int(getattr(out, "num_waits_used", 0)),
        "finish_reason": getattr(out, "finish_reason", None),
        "error": getattr(out, "error", None),
    }


def summarize(records: list[dict], points: list[dict], meta: dict) -> dict:
    """Summary dict from scored records (deterministic: same records -> same summary)."""
    by_point: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_point[r["point"]].append(r)
    rows = []
    for p in points:
        rs = by_point.get(p["name"])
        if not rs:
            raise ValueError(f"no runs recorded for point {p['name']!r}")
        if p["method"] == "majority":
            rows += majority_rows(p, rs)
        else:
            rows.append(p | metrics.point_stats(rs))
    methods = {}
    for m in dict.fromkeys(p["method"] for p in points):
        mrows = [r for r in rows if r["method"] == m]
        curve = [(r["compute"], r["accuracy"]) for r in mrows if r["compute"] > 0]
        runs = [r for r in records if r["method"] == m]
        methods[m] = metrics.curve_metrics(curve, runs) | {
            "points": len(mrows), "mean_thinking_tokens": [r["mean_thinking_tokens"] for r in mrows],
            "compute": [r["compute"] for r in mrows]}
    summary = dict(meta) | {"points": rows, "methods": methods}
    if meta.get("samples", 1) > 1:
        maj = {}
        for p in points:
            curve = metrics.majority_curve(by_point[p["name"]])
            maj[p["name"]] = {"curve": curve} | metrics.curve_metrics(
                [(c["compute"], c["accuracy"]) for c in curve if c["compute"] > 0])
        summary["majority"] = maj
    return summary


def majority_rows(point: dict, records: list[dict]) -> list[dict]:
    """One summary row per k of a majority point: accuracy of the majority answer of samples
    0..k-1 (evaluation/metrics.py: grader-equivalence groups, ties -> first drawn), compute = mean over
    questions of the total thinking tokens of those k samples, mean_thinking_tokens = per sample."""
    K = min(sum(1 for r in records if r["qid"] == q) for q in {r["qid"] for r in records})
    rows = []
    for c in metrics.majority_curve(records):
        used = [r for r in records if r["sample"] < c["k"]]
        stats = metrics.point_stats(used)
        rows.append(point | stats | {
            "name": f"{point['name']}/k={c['k']}", "k": c["k"], "samples_drawn": K,
            "accuracy": c["accuracy"], "compute": c["compute"], "pass@1": stats["accuracy"]})
    return rows


def _fmt(v, pct=False, digits=1) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.{digits}f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_markdown(summary: dict) -> str:
    """Per-point table, then the method comparison (s1 Table 3 columns + thinking tokens per point)."""
    lines = [f"## {summary['task']}: {summary['num_questions']} questions, {summary['samples']} sample(s)/point, "
             f"temperature {summary['temperature']}, model `{summary['model']}`", "",
             "| method | max thinking | wait | setting | accuracy % | mean thinking tokens | compute | control |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["points"]:
        cap = "none" if r["max_thinking_tokens"] is None else r["max_thinking_tokens"]
        setting = r.get("variant", "") + (f" k={r['k']}" if "k" in r else "")
        lines.append(f"| {r['method']} | {cap} | {r['num_wait']} | {setting.strip() or '-'} | {r['accuracy']:.1f} | "
                     f"{r['mean_thinking_tokens']:.1f} | {r['compute']:.1f} | {_fmt(r['control'], pct=True)} |")
    lines += ["", "| method | Control | Scaling (acc pts per 2x compute) | Performance % | "
                  "mean thinking tokens per point | compute per point |", "|---|---|---|---|---|---|"]
    for m, v in summary["methods"].items():
        think = " / ".join(f"{x:.1f}" for x in v.get("mean_thinking_tokens", []))
        comp = " / ".join(f"{x:.1f}" for x in v.get("compute", []))
        lines.append(f"| {m} | {_fmt(v['control'], pct=True)} | {_fmt(v['scaling'])} | {_fmt(v['performance'])} | "
                     f"{think or '-'} | {comp or '-'} |")
    if "majority" in summary:
        lines += ["", "| majority voting at point | k | accuracy % | compute (total thinking tokens) |",
                  "|---|---|---|---|"]
        for name, v in summary["majority"].items():
            for c in v["curve"]:
                lines.append(f"| {name} | {c['k']} | {c['accuracy']:.1f} | {c['compute']:.1f} |")
    return "\n".join(lines) + "\n"


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
        from evaluation.plots import plot_scaling

        plot_scaling(summary, os.path.join(out_dir, "scaling.png"))
    except ImportError as e:  # matplotlib missing: the numbers are still written
        print(f"warning: no plot ({e})", file=sys.stderr)


def _meta(config: dict) -> dict:
    return {k: config[k] for k in ("task", "model", "num_questions", "samples", "temperature", "seed")}


def run_eval(llm, items: list[TaskItem], points: list[EvalPoint], *, samples: int = 1, temperature: float = 0.0,
             seed: int = 0, base_params: dict | None = None, out_dir: str | None = None,
             task: str = "?", model: str = "?", sampling_params_cls=None) -> dict:
    """Generate every request in one batched call, score, summarize, and write outputs."""
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if not items:
        raise ValueError("no questions to evaluate")
    if sampling_params_cls is None:
        from infer import SamplingParams as sampling_params_cls
    prompts, params, stubs = build_requests(items, points, samples, temperature, seed, base_params or {},
                                            sampling_params_cls)
    print(f"eval {task}: {len(items)} questions x {len(points)} points x {samples} samples = "
          f"{len(prompts)} requests in one batch", file=sys.stderr)
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, params)
    if len(outputs) != len(prompts):
        raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(prompts)} prompts")
    records = [score_record(stub | _output_fields(out)) for stub, out in zip(stubs, outputs)]
    rs_rounds = rejection_rounds(llm, prompts, params, records, points, seed,
                                 lambda i, out: score_record(stubs[i] | _output_fields(out)))
    wall = time.perf_counter() - t0
    errors = [r for r in records if r["finish_reason"] == "error"]
    if errors:  # kept in the results (scored as wrong) but never silent
        print(f"warning: {len(errors)} request(s) failed in the engine, e.g. {errors[0]['error']}", file=sys.stderr)
    config = {
        "task": task, "model": model, "num_questions": len(items), "samples": samples,
        "temperature": temperature, "seed": seed, "base_params": base_params or {},
        "points": [p.to_dict() for p in points],
    }
    summary = summarize(records, config["points"], _meta(config))
    out_tokens = sum(r["output_tokens"] or 0 for r in records)
    timing = {"requests": len(prompts), "generate_wall_s": wall, "output_tokens": out_tokens,
              "output_tokens_per_s": out_tokens / wall if wall > 0 else None,
              "thinking_tokens": sum(r["thinking_tokens"] for r in records),
              "rejection_sampling_extra_rounds": rs_rounds}
    if out_dir is not None:
        write_outputs(out_dir, records, config, summary)
        with open(os.path.join(out_dir, "timing.json"), "w") as f:
            json.dump(timing, f, indent=2)
    summary_timing = dict(summary)
    summary_timing["_timing"] = timing
    return summary_timing


def rescore(run_dir: str, out_dir: str | None = None) -> dict:
    """Re-extract and re-grade a finished run's samples.jsonl; rewrite summary files."""
    cfg_path, samples_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "samples.jsonl")
    for p in (cfg_path, samples_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"--rescore {run_dir!r}: missing {os.path.basename(p)} (not a finished s1 eval run?)")
    with open(cfg_path) as f:
        config = json.load(f)
    records = [score_record(r) for r in read_jsonl(samples_path)]
    summary = summarize(records, config["points"], _meta(config))
    write_outputs(out_dir or run_dir, records, config, summary)
    return summary


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _int_list(s: str, what: str, allow_none: bool = False) -> list:
    out = []
    for tok in s.split(","):
        tok = tok.strip()
        if allow_none and tok.lower() in ("none", "inf", "-1"):
            out.append(None)
            continue
        try:
            v = int(tok)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {tok!r} is not an integer") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"{what}: {v} is negative")
        out.append(v)
    if not out:
        raise argparse.ArgumentTypeError(f"{what}: empty list")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF-format model directory (config.json, safetensors, tokenizer.json)")
    p.add_argument("--task", help="aime24 | aime24_qwen | aime25 | math500 | amc23 | gpqa_diamond")
    p.add_argument("--data-dir", help="folder with <task>/test.jsonl (default: $S1_EVAL_DATA or ../shared/data/eval)")
    p.add_argument("--data-file", help="one local file (jsonl/json/csv) in the task's schema")
    p.add_argument("--hub", help="Hugging Face datasets name to load instead of local files")
    p.add_argument("--split", help="hub split (default: test, else train)")
    p.add_argument("--methods", default="budget_forcing", help=f"comma list of: {', '.join(METHODS)}")
    p.add_argument("--budgets", default="512,1024,2048,4096",
                   help="max thinking tokens per point, comma list; 'none' = no cap")
    p.add_argument("--num-wait", default="0", help="number of 'Wait' extensions per point, comma list")
    p.add_argument("--min-thinking-tokens", type=int, default=0)
    p.add_argument("--samples", type=int, default=1, help="samples per (question, point); >1 adds majority voting")
    m = p.add_argument_group("method comparison (issue 8; see evaluation/methods.py)")
    m.add_argument("--step-tokens", type=int, default=methods.DEFAULT_STEP_TOKENS,
                   help="scc: thinking tokens per step; budget N -> max(1, N // step-tokens) steps")
    m.add_argument("--ccc-budgets", help="ccc: SHORT,LONG nominal limits for Control "
                                         "(default: median and largest budget)")
    m.add_argument("--rs-max-attempts", type=int, default=8, help="rs: cap on attempts per run")
    m.add_argument("--rs-temperature", type=float, default=1.0)
    m.add_argument("--majority-k", type=int, default=16, help="majority: samples per question (K)")
    m.add_argument("--majority-budget", default="none", help="majority: budget-forcing cap per sample ('none')")
    m.add_argument("--majority-temperature", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and the GPQA option shuffle")
    p.add_argument("--max-answer-tokens", type=int, default=1024, help="cap on sampled answer-phase tokens")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on all output tokens per request")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--device", default=None, help="engine device (default: cuda if available, else cpu)")
    p.add_argument("--max-model-len", type=int, default=None, help="engine context limit (default: the model's)")
    p.add_argument("--dtype", default=None, help="float32 (s1 evaluated in fp32) | bfloat16 | float16")
    p.add_argument("--out", help="output folder")
    p.add_argument("--rescore", metavar="DIR", help="re-grade a finished run in DIR (no generation)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rescore:
        try:
            summary = rescore(args.rescore, args.out)
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"s1 eval: {e}", file=sys.stderr)
            return 2
        print(summary_markdown(summary))
        return 0
    missing = [f"--{k}" for k in ("model", "task", "out") if not getattr(args, k)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or use --rescore DIR)")
    try:
        budgets = _int_list(args.budgets, "--budgets", allow_none=True)
        waits = _int_list(args.num_wait, "--num-wait")
        ccc = _int_list(args.ccc_budgets, "--ccc-budgets") if args.ccc_budgets else None
        if ccc is not None and len(ccc) != 2:
            raise ValueError(f"--ccc-budgets needs two values SHORT,LONG, got {args.ccc_budgets!r}")
        opts = MethodOptions(step_tokens=args.step_tokens, ccc_budgets=tuple(ccc) if ccc else None,
                             rs_max_attempts=args.rs_max_attempts, rs_temperature=args.rs_temperature,
                             majority_k=args.majority_k,
                             majority_budget=_int_list(args.majority_budget, "--majority-budget", allow_none=True)[0],
                             majority_temperature=args.majority_temperature)
        points = make_points([m.strip() for m in args.methods.split(",") if m.strip()], budgets, waits,
                             args.min_thinking_tokens, opts)
        items = load_task(args.task, data_dir=args.data_dir, data_file=args.data_file, hub=args.hub,
                          split=args.split, limit=args.limit, seed=args.seed)
    except (argparse.ArgumentTypeError, ValueError, TaskError) as e:
        print(f"s1 eval: {e}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.model):
        print(f"s1 eval: --model {args.model!r} is not a directory", file=sys.stderr)
        return 2
    if args.samples > 1 and args.temperature == 0:
        print("s1 eval: warning: --samples > 1 with temperature 0 gives identical greedy samples", file=sys.stderr)

    from infer import LLM, SamplingParams

    import torch

    llm_kwargs = {"device": args.device or ("cuda" if torch.cuda.is_available() else "cpu")}
    if args.dtype:
        dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                  "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if args.dtype not in dtypes:
            print(f"s1 eval: --dtype {args.dtype!r}: expected one of {', '.join(dtypes)}", file=sys.stderr)
            return 2
        llm_kwargs["dtype"] = dtypes[args.dtype]
    if args.max_model_len:
        llm_kwargs["max_model_len"] = args.max_model_len
    llm = LLM(args.model, **llm_kwargs)
    base = {"top_p": args.top_p, "max_answer_tokens": args.max_answer_tokens}
    if args.max_tokens is not None:
        base["max_tokens"] = args.max_tokens
    summary = run_eval(llm, items, points, samples=args.samples, temperature=args.temperature, seed=args.seed,
                       base_params=base, out_dir=args.out, task=args.task, model=args.model,
                       sampling_params_cls=SamplingParams)
    t = summary["_timing"]
    print(summary_markdown(summary))
    print(f"{t['requests']} requests, {t['output_tokens']} output tokens in {t['generate_wall_s']:.1f}s "
          f"({t['output_tokens_per_s'] or 0:.1f} tok/s); outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
