"""Evaluation sweeps: the settings of a run (methods x thinking budgets x extensions x samples), the
engine requests they become, and running them through the engine with every result written as
soon as its request finishes.

    points = make_points(["budget_forcing"], [500, 1000, "auto"], [0])
    summary = run_eval(llm, items, points, out_dir="runs/aime24")        # resume=True continues

A sweep point (`EvalPoint`) is one setting. Every request of the sweep, (question, point, sample),
goes to ONE `LLM.generate` call, so the engine batches across points and questions (K samples x
questions for majority voting included). With an output folder, each finished request is appended
to samples.jsonl (one flushed line), so an interrupted run keeps every finished record and
`resume=True` skips them; config.json (written first) must match for a resume. At the end the
records are sorted (point, question, sample); each was graded as it finished, the vote groups are
formed (s1/evaluation/grading.py) and the report summarizes them (s1/evaluation/report.py).

Methods: `METHODS` is the one list of method names. Each maps (question, point) to the question
shown to the model and the engine's budget-forcing settings:
  budget_forcing  the bare question; the engine caps thinking at the budget (a number, or "auto":
                  s1's cap from the context, resolved by the engine) and replaces up to num_wait
                  early ends by the extension string ("Wait")
  tcc, tcc+bf     "Think for up to N tokens." in the prompt (s1/evaluation/methods.py); without /
                  with budget forcing at N
  scc, scc+bf     "Think for up to S steps.", S = N // step_tokens; without / with forcing at N tokens
                  (scc_style "plain", our own "[N steps left]" trace markers). scc_style "s1": as s1
                  ran its step-conditional model -- the budgets ARE step counts S, the engine's
                  thinking format is s1's step one (s1/model/thinking.py S1_STEPS: start
                  "<|im_start|>", thinking ends at "<|im_start|>0", the model writes its own
                  "<|im_start|>N steps left" markers), under the "auto" cap; only `scc` (s1's
                  "step-conditional control + budget forcing" command). Control measures
                  against S x step_tokens thinking tokens (the paper's 100 tokens per step)
  ccc             the short and long thinking prompts, plus the bare question ("default") whose
                  mean thinking tokens is their bound: short should stay at or below it, long at
                  or above it (a fixed bound replaces the default run)
  rs              rejection sampling (s1's): temperature 1, thinking capped at N; a sample that
                  reached the cap (did not end its thinking by itself within N tokens) is rejected
                  and the question sampled again until one fits (no limit, as s1; --max-tries caps
                  it and a question that never fit counts as wrong). Later rounds resample only the
                  questions not yet accepted, several tries each when few are left; the summary
                  reports the tries per question (mean, max) of every budget
  majority        K samples per question at one budget (with extensions), voted for k = 1, 2, 4..K
  plain           --no-think: the plain chat prompt (no thinking start), generated without a
                  thinking phase (Table 1's Qwen2.5-32B-Instruct row); majority votes over plain
                  samples with --no-think too
A thinking budget above what the context holds (s1's "auto" rule for the prompt) cannot act: the
sweep warns once per budget and marks those records `budget_clipped` (with the context's
`context_thinking_limit`); summary and plot mark the points.
The prompt-only methods (tcc, scc, ccc) run under the engine's "auto" cap, as s1's runs did; their
stated budget is only the limit Control measures against.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Callable

from s1.common.jsonl import JsonlAppender, read_jsonl
from s1.evaluation import methods
from s1.evaluation.grading import group_votes, score_record
from s1.evaluation.report import meta_of, summarize, write_outputs
from s1.evaluation.tasks import TaskItem, choice_options

AUTO = "auto"

# --------------------------------------------------------------------------------------------
# Parsing budget lists (CLI, demo, benchmarks)
# --------------------------------------------------------------------------------------------


def parse_int_list(text: str, flag: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; ValueError naming `flag` for anything else (negatives included)."""
    out = []
    for tok in str(text).split(","):
        tok = tok.strip()
        try:
            v = int(tok)
        except ValueError:
            raise ValueError(f"{flag}: {tok!r} is not an integer") from None
        if v < 0:
            raise ValueError(f"{flag}: {v} is negative")
        out.append(v)
    if not out:
        raise ValueError(f"{flag}: empty list")
    return out


def parse_budgets(text: str, flag: str = "--budgets") -> list[int | str | None]:
    """Thinking budgets: integers, "auto" (the engine's s1 cap) and "none" (no cap)."""
    out: list[int | str | None] = []
    for tok in str(text).split(","):
        low = tok.strip().lower()
        if low == AUTO:
            out.append(AUTO)
        elif low in ("none", "inf", "-1"):
            out.append(None)
        else:
            out += parse_int_list(tok, flag)
    return out


# --------------------------------------------------------------------------------------------
# Sweep points and methods
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """One setting of a sweep. `max_thinking_tokens`: an int, "auto" or None (no cap).

    max/min_thinking_tokens are the point's *nominal* limits (its budget): Control is measured
    against them ("auto": the cap the engine resolved), and prompt-based methods state them in the
    prompt. Whether the engine also enforces them is the method's choice (METHODS). Method
    settings live here too, so config.json records them: `variant` (scc step count, ccc class,
    rs / majority settings), `samples` (majority: K), `temperature` (None: the sweep's),
    `max_attempts` (rs).
    """

    method: str = "budget_forcing"
    max_thinking_tokens: int | str | None = None
    min_thinking_tokens: int = 0
    num_wait: int = 0
    variant: str = ""
    samples: int = 1
    temperature: float | None = None
    max_attempts: int | None = 1          # rs: tries per question; None = until the thinking fits (s1)
    thinking: bool = True                 # False: plain chat, no thinking phase (--no-think)

    @property
    def name(self) -> str:
        if not self.thinking:
            return f"{self.method}/no-think" + (f"/{self.variant}" if self.variant else "")
        cap = "none" if self.max_thinking_tokens is None else str(self.max_thinking_tokens)
        s = f"{self.method}/max={cap}/wait={self.num_wait}"
        s += f"/min={self.min_thinking_tokens}" if self.min_thinking_tokens else ""
        return s + (f"/{self.variant}" if self.variant else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"name": self.name}


def _forcing(point: EvalPoint) -> dict:
    return {"max_thinking_tokens": point.max_thinking_tokens,
            "min_thinking_tokens": point.min_thinking_tokens, "num_wait": point.num_wait}


# s1 ran its prompt-only methods with max_tokens_thinking=auto: no budget forcing below that cap.
_PROMPT_ONLY = {"max_thinking_tokens": AUTO, "min_thinking_tokens": 0, "num_wait": 0}


def _need_budget(point: EvalPoint) -> int:
    b = point.max_thinking_tokens
    if not isinstance(b, int):
        raise ValueError(f"{point.method} needs a number of thinking tokens as its budget, not {b!r}")
    return b


def _steps(point: EvalPoint) -> int:
    if not point.variant.startswith("steps="):
        raise ValueError(f"step-conditional point {point.name!r} has no steps=N variant (use make_points)")
    return int(point.variant.split("=", 1)[1].split("/", 1)[0])


def budget_forcing(question: str, point: EvalPoint) -> tuple[str, dict]:
    return question, _forcing(point)


def token_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    return methods.render_tcc(question, _need_budget(point)), dict(_PROMPT_ONLY)


def token_conditional_bf(question: str, point: EvalPoint) -> tuple[str, dict]:
    return methods.render_tcc(question, _need_budget(point)), _forcing(point)


def step_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    return methods.render_scc(question, _steps(point)), dict(_PROMPT_ONLY)


def step_conditional_bf(question: str, point: EvalPoint) -> tuple[str, dict]:
    return methods.render_scc(question, _steps(point)), _forcing(point)


def class_conditional(question: str, point: EvalPoint) -> tuple[str, dict]:
    shown = question if point.variant == "default" else methods.render_ccc(question, point.variant)
    return shown, dict(_PROMPT_ONLY)


def rejection_sampling(question: str, point: EvalPoint) -> tuple[str, dict]:
    return question, {"max_thinking_tokens": _need_budget(point), "min_thinking_tokens": 0, "num_wait": 0}


def majority(question: str, point: EvalPoint) -> tuple[str, dict]:
    return question, _forcing(point) if point.thinking else dict(_NO_THINKING)


def plain(question: str, point: EvalPoint) -> tuple[str, dict]:
    return question, dict(_NO_THINKING)


# --no-think: no thinking phase at all (the prompt is the plain chat prompt; the engine generates
# without thinking rules, RequestRules.thinking=False)
_NO_THINKING = {"max_thinking_tokens": None, "min_thinking_tokens": 0, "num_wait": 0}


# The one list of methods (`s1 eval --methods`), in the order reports list them:
# name -> transform(question, point) -> (question shown to the model, SamplingParams fields).
METHODS: dict[str, Callable[[str, EvalPoint], tuple[str, dict]]] = {
    "budget_forcing": budget_forcing,
    "tcc": token_conditional,
    "tcc+bf": token_conditional_bf,
    "scc": step_conditional,
    "scc+bf": step_conditional_bf,
    "ccc": class_conditional,
    "rs": rejection_sampling,
    "majority": majority,
    "plain": plain,
}
# the methods a --no-think sweep can run (budget_forcing becomes "plain": nothing to force)
NO_THINK_METHODS = ("plain", "majority")


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Settings of the methods other than budget forcing (CLI: --step-tokens, --ccc-bound, --rs-*,
    --max-tries, --majority-*). Defaults are s1's runs: rejection sampling at temperature 1 until
    the thinking fits (rs_max_attempts None: no limit, as s1), majority voting over 64 samples at
    temperature 1."""

    step_tokens: int = methods.DEFAULT_STEP_TOKENS
    ccc_bound: int | None = None             # None: the mean thinking tokens of the ccc default run
    rs_max_attempts: int | None = None       # None: resample until the thinking fits (s1)
    rs_temperature: float = 1.0
    majority_k: int = 64
    majority_budget: int | str | None = AUTO
    majority_num_wait: int = 0
    majority_temperature: float = 1.0
    scc_style: str = "plain"                 # "plain": [N steps left] markers; "s1": s1's own (budgets in steps)


def make_points(methods_: list[str], budgets: list[int | str | None], num_waits: list[int],
                min_thinking_tokens: int = 0, opts: MethodOptions | None = None,
                thinking: bool = True) -> list[EvalPoint]:
    """Sweep points. budget_forcing crosses every budget with num_waits; tcc+bf and scc+bf cross the
    numeric budgets with num_waits; tcc, scc and rs take the numeric budgets ("auto" and "none"
    state no number); ccc has the points default, short and long (short and long only, with
    opts.ccc_bound); majority is one K-sample point (expanded to k = 1, 2, 4..K in summaries).

    thinking=False (--no-think): plain chat, no thinking phase; budget_forcing (or plain) becomes
    the one point "plain" and majority votes over K plain samples; budgets, extensions and the
    other methods have nothing to act on and are refused."""
    opts = opts or MethodOptions()
    for m in methods_:
        if m not in METHODS:
            raise ValueError(f"--methods: unknown method {m!r}; known: {', '.join(METHODS)}")
    for flag, v in (("--step-tokens", opts.step_tokens), ("--max-tries", opts.rs_max_attempts),
                    ("--majority-k", opts.majority_k)):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if not thinking:
        bad = [m for m in methods_ if m not in NO_THINK_METHODS + ("budget_forcing",)]
        if bad:
            raise ValueError(f"--no-think: --methods {', '.join(bad)} needs a thinking phase; plain chat runs "
                             "budget_forcing (as the one point 'plain') and majority")
        if any(b is not None for b in budgets) or any(num_waits) or min_thinking_tokens:
            raise ValueError("--no-think: no thinking phase, so no --budgets, --num-wait or --min-thinking-tokens")
        pts = []
        for m in dict.fromkeys("plain" if m == "budget_forcing" else m for m in methods_):
            if m == "plain":
                pts.append(EvalPoint("plain", thinking=False))
            else:
                pts.append(EvalPoint(m, None, 0, 0, f"K={opts.majority_k}", samples=opts.majority_k,
                                     temperature=opts.majority_temperature, thinking=False))
        return pts
    if "plain" in methods_:
        raise ValueError("--methods plain is plain chat without a thinking phase: add --no-think")
    if opts.majority_num_wait < 0:
        raise ValueError(f"--majority-num-wait must be >= 0, got {opts.majority_num_wait}")
    numeric = [b for b in budgets if isinstance(b, int)]
    if opts.scc_style not in ("plain", "s1"):
        raise ValueError(f"--scc-style must be plain or s1, got {opts.scc_style!r}")
    if opts.scc_style == "s1":
        if methods_ != ["scc"]:
            raise ValueError("--scc-style s1 runs --methods scc alone: its thinking format (s1's step markers, "
                             "thinking ends at '<|im_start|>0') applies to the whole engine, and s1 cannot "
                             "extend (num_wait) a two-token end either; got --methods " + ",".join(methods_))
        if not numeric or any(b <= 0 for b in numeric):
            raise ValueError("--scc-style s1: --budgets are step counts (s1 ran 16,32,64,128,256), positive numbers")
    pts = []
    for m in methods_:
        if m in ("tcc", "tcc+bf", "scc", "scc+bf", "rs") and not numeric:
            raise ValueError(f"--methods {m} needs numeric --budgets (it states or checks a number of "
                             f"thinking tokens); got only {', '.join(str(b).lower() for b in budgets)}")
        if m == "budget_forcing":
            pts += [EvalPoint(m, b, min_thinking_tokens, w) for b in budgets for w in num_waits]
        elif m == "tcc+bf":
            pts += [EvalPoint(m, b, min_thinking_tokens, w) for b in numeric for w in num_waits]
        elif m == "scc+bf":
            pts += [EvalPoint(m, b, min_thinking_tokens, w,
                              f"steps={methods.steps_for_budget(b, opts.step_tokens)}")
                    for b in numeric for w in num_waits]
        elif m == "tcc":
            pts += [EvalPoint(m, b) for b in numeric]
        elif m == "scc" and opts.scc_style == "s1":   # budgets in steps; Control against steps x step_tokens
            pts += [EvalPoint(m, b * opts.step_tokens, variant=f"steps={b}/s1") for b in numeric]
        elif m == "scc":
            pts += [EvalPoint(m, b, variant=f"steps={methods.steps_for_budget(b, opts.step_tokens)}")
                    for b in numeric]
        elif m == "rs":
            if 0 in numeric:
                raise ValueError("--methods rs: budget 0 can never fit (a sample fits when its thinking ends "
                                 "by itself in fewer tokens than the budget)")
            cap = opts.rs_max_attempts
            pts += [EvalPoint(m, b, temperature=opts.rs_temperature, max_attempts=cap,
                              variant="" if cap is None else f"attempts<={cap}") for b in numeric]
        elif m == "ccc":
            if opts.ccc_bound is None:
                pts += [EvalPoint(m, variant="default"), EvalPoint(m, variant="short"),
                        EvalPoint(m, variant="long")]
            else:
                if opts.ccc_bound < 0:
                    raise ValueError(f"--ccc-bound must be >= 0, got {opts.ccc_bound}")
                pts += [EvalPoint(m, opts.ccc_bound, variant="short"),
                        EvalPoint(m, None, opts.ccc_bound, variant="long")]
        elif m == "majority":
            pts.append(EvalPoint(m, opts.majority_budget, 0, opts.majority_num_wait, f"K={opts.majority_k}",
                                 samples=opts.majority_k, temperature=opts.majority_temperature))
    names = [p.name for p in pts]
    if len(set(names)) != len(names):
        raise ValueError("duplicate sweep points (repeated values in --budgets / --num-wait?)")
    return pts


def request_seed(seed: int, qid: str, point: str, sample: int) -> int:
    """Per-request sampling seed, stable across batch composition (hash of the request identity)."""
    h = hashlib.sha256(f"{seed}|{qid}|{point}|{sample}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def build_requests(items: list[TaskItem], points: list[EvalPoint], samples: int, temperature: float,
                   seed: int, base_params: dict, sampling_params_cls) -> tuple[list[str], list, list[dict]]:
    """All (question, point, sample) requests -> prompts, SamplingParams, and record stubs.

    A point with samples > 1 (majority) draws that many samples, others `samples`; a point's own
    temperature (rs, majority) overrides the sweep's. Stubs carry the point's nominal limits
    (Control is measured against them) and the cap requested from the engine separately."""
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
                if not point.thinking:     # plain chat: compute is counted in output tokens
                    stubs[-1]["plain"] = True
                if item.kind == "choice":  # lets the grader map an answer naming an option's text
                    stubs[-1]["choices"] = choice_options(item.question)
                    stubs[-1]["question"] = item.question   # what s1's GPQA judge is shown
    return prompts, params, stubs


def output_fields(out) -> dict:
    """The record fields taken from one engine output (GenerationOutput)."""
    ids = getattr(out, "output_token_ids", None)
    return {
        "text": getattr(out, "text", ""),
        "thinking": getattr(out, "thinking", None),
        "answer_text": getattr(out, "answer", None),
        "thinking_tokens": int(getattr(out, "num_thinking_tokens", 0)),
        "applied_max_thinking_tokens": getattr(out, "max_thinking_tokens", None),  # "auto" resolved
        "output_tokens": len(ids) if ids is not None else None,
        "waits_used": int(getattr(out, "num_waits_used", 0)),
        "finish_reason": getattr(out, "finish_reason", None),
        "error": getattr(out, "error", None),
    }


def rs_fits(rec: dict) -> bool:
    """A rejection-sampling sample is accepted when its thinking ended by itself within the budget
    N: fewer than N thinking tokens (at N the engine forced the end: s1's vLLM call with max_tokens
    N stopped "length" there and the sample was drawn again). A sample the context cut inside its
    thinking (a budget above what the context holds: finish "length" with no answer) did not end
    its thinking either."""
    if rec["finish_reason"] == "error" or rec["thinking_tokens"] >= rec["max_thinking_tokens"]:
        return False
    return not (rec["finish_reason"] == "length" and not rec.get("answer_text"))


def _key(r: dict) -> tuple:
    return r["qid"], r["point"], r["sample"]


def _sweep_thinking(points: list[EvalPoint]) -> bool:
    """True for a thinking sweep, False for a --no-think one (a sweep is one or the other: the
    engine call renders all its prompts one way)."""
    kinds = {p.thinking for p in points}
    if len(kinds) > 1:
        raise ValueError("a sweep cannot mix thinking points and --no-think (plain chat) points")
    return kinds.pop() if kinds else True


def render_chat_prompt(tokenizer, question: str) -> str:
    """The plain chat prompt of --no-think: the prompt the engine renders for
    SamplingParams(thinking=False) (the chat template with enable_thinking=False, no thinking start)."""
    return tokenizer.render_prompt(question, thinking=False)


def context_limit(llm) -> int | None:
    """Tokens one sequence may hold in the engine (context, or the whole KV cache if smaller);
    None for engines that do not say (test doubles)."""
    n = getattr(getattr(llm, "scheduler", None), "max_len", None) or getattr(llm, "max_model_len", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def context_clipping(llm, sent: list, params: list, stubs: list[dict], gen_kw: dict,
                     log: Callable[[str], None]) -> dict[int, int]:
    """Requests whose thinking budget is more than the context holds -> the most thinking tokens the
    context leaves them (s1's "auto" rule for this prompt: context - prompt - forced end - 100).
    Such a budget never acts: the context stops the thinking first (a 4K-context model at budgets
    8000 and 16000 runs as at "auto"). Warns once per budget; the caller marks the records."""
    ctx = context_limit(llm)
    tok = getattr(llm, "tokenizer", None)
    if ctx is None or tok is None or not hasattr(llm, "prompt_length"):
        return {}
    from s1.infer.engine import AUTO_MARGIN

    plen: dict = {}
    end_len: dict = {}
    out: dict[int, int] = {}
    by_budget: dict[int, list[tuple[int, int]]] = {}
    for i, (prompt, p) in enumerate(zip(sent, params)):
        cap = getattr(p, "max_thinking_tokens", None)
        if not isinstance(cap, int) or isinstance(cap, bool):
            continue
        if prompt not in plen:
            try:
                plen[prompt] = llm.prompt_length(prompt, **gen_kw)
            except ValueError:   # the engine reports a bad prompt in its output
                plen[prompt] = None
        end = p.end_thinking if p.end_thinking is not None else tok.thinking_format.forced_end   # None: the format's
        if end not in end_len:
            end_len[end] = len(tok.encode(end[1:] if end.startswith("\n") else end))
        if plen[prompt] is None:
            continue
        room = max(0, ctx - plen[prompt] - end_len[end] - AUTO_MARGIN)
        if cap > room:
            out[i] = room
            by_budget.setdefault(cap, []).append((i, room))
    for cap, hits in sorted(by_budget.items()):
        rooms = [r for _, r in hits]
        points = sorted({stubs[i]["point"] for i, _ in hits})
        log(f"warning: thinking budget {cap} is more than the context holds: with {ctx} tokens of context "
            f"the prompt, the forced end and s1's {AUTO_MARGIN}-token answer margin leave "
            f"{min(rooms)}-{max(rooms)} thinking tokens, so the context, not the budget, stops the thinking "
            f"of {len(hits)} run(s) ({', '.join(points[:3])}{', ...' if len(points) > 3 else ''}); they are "
            "marked budget_clipped in samples.jsonl and clipped in the summary and plot "
            "(--max-model-len or a longer-context model lifts the limit)")
    return out


def _rs_progress(n: int, progress: bool):
    """The progress bar of rejection sampling's later rounds (None without progress)."""
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=n, desc="rejection sampling (accepted)", unit="sample", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def sweep_config(items: list[TaskItem], points: list[EvalPoint], *, samples: int, temperature: float,
                 seed: int, base_params: dict, task: str, model: str, thinking_format: dict | None = None) -> dict:
    """config.json: everything that defines the sweep's records (a resume must match it), the
    thinking format included (s1/model/thinking.py: a resume with other --thinking-* flags is refused)."""
    digest = hashlib.sha256(json.dumps([[i.id, i.question, i.answer] for i in items]).encode()).hexdigest()
    return json.loads(json.dumps({
        "task": task, "model": model, "num_questions": len(items), "questions_sha256": digest,
        "samples": samples, "temperature": temperature, "seed": seed, "base_params": base_params,
        "points": [p.to_dict() for p in points],
        **({"thinking_format": thinking_format} if thinking_format is not None else {})}))


def part_files(out_dir: str) -> list[str]:
    """The records files of data-parallel groups 1.. of an unfinished run (samples.dp<k>.jsonl;
    group 0 appends to samples.jsonl itself); merged into samples.jsonl when the run ends."""
    if not os.path.isdir(out_dir):
        return []
    names = [n for n in os.listdir(out_dir) if n.startswith("samples.dp") and n.endswith(".jsonl")
             and n[len("samples.dp"):-len(".jsonl")].isdigit()]
    return [os.path.join(out_dir, n) for n in sorted(names, key=lambda n: int(n[len("samples.dp"):-len(".jsonl")]))]


def check_resume(out_dir: str, config: dict) -> list[dict]:
    """The finished records of an earlier run of the same sweep in out_dir ([] when there is none):
    samples.jsonl and the data-parallel groups' samples.dp<k>.jsonl. ValueError when out_dir holds
    a different sweep (naming the settings that differ)."""
    cfg_path, samples_path = os.path.join(out_dir, "config.json"), os.path.join(out_dir, "samples.jsonl")
    files = ([samples_path] if os.path.exists(samples_path) else []) + part_files(out_dir)
    if not os.path.exists(cfg_path):
        if files:
            raise ValueError(f"--resume: {out_dir} has {os.path.basename(files[0])} but no config.json; "
                             "not an s1 eval run")
        return []
    with open(cfg_path) as f:
        old = json.load(f)
    diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if diff:
        raise ValueError(f"--resume: {out_dir} holds a different sweep (differs in {', '.join(diff)}); "
                         "use another --out, or --overwrite to replace it")
    return [r for path in files for r in read_jsonl(path, tolerate_truncated_tail=True)]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg: str) -> None:
    """The log of data-parallel ranks other than 0."""


def run_eval(llm, items: list[TaskItem], points: list[EvalPoint], *, samples: int = 1, temperature: float = 0.0,
             seed: int = 0, base_params: dict | None = None, out_dir: str | None = None, task: str = "?",
             model: str = "?", sampling_params_cls=None, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] = _log, dp=None, rs_batch: int | None = None) -> dict | None:
    """Generate every request (one batched engine call, plus one per rejection-sampling round),
    writing each record as its request finishes; score, summarize and write the outputs.

    Returns the summary with a "_timing" entry (also written to timing.json, kept out of
    summary.json so that a re-score reproduces summary.json byte for byte).

    dp: data parallelism (s1/evaluation/data_parallel.py::DataParallel; torchrun with N = DP x TP ranks):
    each DP group runs the requests still to do that fall to it (an interleaved share: `dp.shard`)
    through its own engine (`llm`, tensor-parallel or not), with the "auto" cap still resolved
    from the longest prompt of the WHOLE sweep. Global rank 0 reads an earlier run (resume) and
    writes config.json first; each group's leader appends its finished records as they come
    (group 0: samples.jsonl, group k: samples.dp<k>.jsonl, so an interrupted run keeps them and a
    resume, with any number of groups, reads them all). At the end rank 0 gathers every group's
    records and writes the outputs exactly as a single process would (the part files are then
    removed) and returns the summary; the other ranks return None."""
    writer = dp is None or dp.writer
    leader = dp is None or dp.leader
    if not writer:
        log = _quiet
        progress = False
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if not items:
        raise ValueError("no questions to evaluate")
    if sampling_params_cls is None:
        from s1.infer import SamplingParams as sampling_params_cls
    base_params = dict(base_params or {})
    fmt = getattr(getattr(llm, "tokenizer", None), "thinking_format", None)
    config = sweep_config(items, points, samples=samples, temperature=temperature, seed=seed,
                          base_params=base_params, task=task, model=model,
                          thinking_format=fmt.describe() if hasattr(fmt, "describe") else None)
    prompts, params, stubs = build_requests(items, points, samples, temperature, seed, base_params,
                                            sampling_params_cls)
    by_key = {_key(s): i for i, s in enumerate(stubs)}
    records: dict[tuple, dict] = {}
    new_records: list[dict] = []
    appender = None
    if out_dir is not None:
        earlier = None
        if writer:
            os.makedirs(out_dir, exist_ok=True)
            earlier = check_resume(out_dir, config) if resume else []
            if not earlier:
                with open(os.path.join(out_dir, "config.json"), "w") as f:
                    json.dump(config, f, indent=2)
                for path in [os.path.join(out_dir, "samples.jsonl")] + part_files(out_dir):
                    if os.path.exists(path):
                        os.remove(path)
        if dp is not None:   # after rank 0's clean-up: the other groups open their files below
            earlier = dp.broadcast(earlier)
        records = {_key(r): r for r in earlier if _key(r) in by_key}
        if leader:
            os.makedirs(out_dir, exist_ok=True)
            name = "samples.jsonl" if dp is None or dp.rank == 0 else f"samples.dp{dp.rank}.jsonl"
            appender = JsonlAppender(os.path.join(out_dir, name))
    todo = [i for i, s in enumerate(stubs) if _key(s) not in records]
    n_todo = len(todo)
    if dp is not None and dp.size > 1:
        todo = dp.shard(todo)
    rs_points = {p.name: p for p in points if p.method == "rs"}
    log(f"eval {task}: {len(items)} questions x {len(points)} points = {len(prompts)} requests"
        + (f"; {len(records)} finished earlier (--resume), {n_todo} to run" if resume else "")
        + (f" over {dp.size} data-parallel engines (interleaved shares)" if dp is not None and dp.size > 1
           else " in one batch"))
    thinking = _sweep_thinking(points)
    # what the engine is sent: the question (rendered by the engine with the thinking start), or
    # for --no-think the plain chat prompt, passed raw (no thinking rules: plain generation)
    sent = prompts if thinking else [render_chat_prompt(llm.tokenizer, q) for q in prompts]
    gen_raw = {} if thinking else {"raw": True}
    clipped = context_clipping(llm, sent, params, stubs, gen_raw, log)
    for i, lim in clipped.items():
        stubs[i] = stubs[i] | {"budget_clipped": True, "context_thinking_limit": lim}

    def finish(i: int, out, extra: dict | None = None) -> None:
        """Score and write request i's record (rs: with its tries)."""
        rec = score_record(stubs[i] | output_fields(out) | (extra or {}))
        records[_key(rec)] = rec
        new_records.append(rec)
        if appender is not None:
            appender.write(rec)

    def attempt_params(i: int, a: int):
        if a == 1:
            return params[i]
        return dataclasses.replace(params[i], seed=request_seed(
            seed, stubs[i]["qid"], f"{stubs[i]['point']}/attempt={a}", stubs[i]["sample"]))

    t0 = time.perf_counter()
    rounds, generated, out_tokens = 0, 0, 0
    # rejection sampling (s1's: resample at temperature 1 until the thinking fits, no limit unless
    # --max-tries): attempt a of request i has its own seed, so a request's tries do not depend on
    # how they are batched. Round 1 runs every request once; each later round runs only the rs
    # requests not yet accepted, several attempts each when few are left (the batch is filled:
    # width = free slots / requests left, never past --max-tries), and accepts the FIRST attempt
    # that fits, as a one-at-a-time loop would: its index is the request's number of tries.
    slots = max(1, int(rs_batch or getattr(getattr(llm, "engine", None), "max_num_seqs", None) or 1))
    rs_state: dict[int, list[int]] = {}        # request -> thinking tokens of its rejected tries so far
    pending = [(i, 1, 1) for i in todo]        # (request, first attempt, attempts in this round)
    # s1's "auto" cap subtracts the longest prompt of the whole sweep: fixed here, so a resumed run
    # or a rejection-sampling round (which run subsets) resolves it exactly as one call would
    gen_kw = dict(gen_raw)
    if hasattr(llm, "prompt_length") and any(getattr(p, "max_thinking_tokens", None) == "auto" for p in params):
        gen_kw["auto_prompt_len"] = max(llm.prompt_length(q, **gen_raw) for q in set(sent))
    bar = None
    try:
        while pending:
            rounds += 1
            flat = [(i, a) for i, a0, w in pending for a in range(a0, a0 + w)]
            got: dict[int, dict[int, object]] = {}
            want = {i: w for i, _, w in pending}
            retry = []

            def resolve(i: int) -> None:
                """All of request i's attempts of this round are in: accept the first that fits."""
                tts = rs_state.setdefault(i, [])
                cap = rs_points[stubs[i]["point"]].max_attempts
                for a in sorted(got[i]):
                    out = got[i][a]
                    tts.append(int(getattr(out, "num_thinking_tokens", 0)))
                    fits = rs_fits(stubs[i] | output_fields(out))
                    failed = getattr(out, "finish_reason", None) == "error"   # would fail on every try
                    if fits or failed or (cap is not None and a >= cap):
                        finish(i, out, {"attempts": a, "attempt_thinking_tokens": list(tts), "rs_accepted": fits})
                        del rs_state[i]
                        if bar is not None:
                            bar.update(1)
                        return
                retry.append(i)

            def on_output(j: int, out) -> None:
                nonlocal generated, out_tokens
                generated += 1
                out_tokens += len(getattr(out, "output_token_ids", None) or [])
                i, a = flat[j]
                if stubs[i]["point"] not in rs_points:
                    finish(i, out)
                    return
                got.setdefault(i, {})[a] = out
                if len(got[i]) == want[i]:
                    resolve(i)

            llm.generate([sent[i] for i, _ in flat], [attempt_params(i, a) for i, a in flat],
                         use_tqdm=progress and rounds == 1, on_output=on_output, **gen_kw)
            if not retry:
                break
            nxt = {i: a0 + w for i, a0, w in pending}
            width = max(1, slots // len(retry))
            pending = []
            for i in sorted(retry):
                cap = rs_points[stubs[i]["point"]].max_attempts
                w = width if cap is None else max(1, min(width, cap - nxt[i] + 1))
                pending.append((i, nxt[i], w))
            if bar is None:
                bar = _rs_progress(len(retry), progress)
            tries = [len(rs_state[i]) for i in retry]
            status = (f"round {rounds + 1}: {len(retry)} sample(s) still over their budget after "
                      f"{min(tries)}-{max(tries)} tries; drawing {sum(w for _, _, w in pending)} samples")
            if bar is not None and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(status, refresh=True)
            else:
                log(f"rejection sampling: {status}")
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
        if appender is not None:
            appender.close()
    if dp is not None and dp.size > 1:
        # every group's new records (its leader's: the other TP ranks hold the same) to rank 0
        shares = dp.gather((new_records, generated, out_tokens, rounds) if leader else ([], 0, 0, 0))
    if not writer:
        return None
    if dp is not None and dp.size > 1:
        generated = sum(s[1] for s in shares)
        out_tokens = sum(s[2] for s in shares)
        rounds = max(s[3] for s in shares)
        for share in shares:
            records.update((_key(r), r) for r in share[0])
    wall = time.perf_counter() - t0

    order = {p.name: n for n, p in enumerate(points)}
    qorder = {it.id: n for n, it in enumerate(items)}
    final = sorted(records.values(), key=lambda r: (order[r["point"]], qorder[r["qid"]], r["sample"]))
    errors = [r for r in final if r["finish_reason"] == "error"]
    if errors:  # kept in the results (scored as wrong) but never silent
        log(f"warning: {len(errors)} request(s) failed in the engine, e.g. {errors[0]['error']}")
    for name, p in rs_points.items():
        rs = [r for r in final if r["point"] == name]
        tries = [r.get("attempts", 1) for r in rs]
        never = sum(r.get("rs_accepted") is False for r in rs)
        if rs:
            log(f"rejection sampling {name}: {sum(tries) / len(tries):.1f} tries per question on average, "
                f"at most {max(tries)}" + (f"; {never} question(s) did not fit within --max-tries "
                                           f"{p.max_attempts} and count as wrong" if never else ""))
    group_votes(final, "rules")   # records -> grades (scored as each finished) -> metrics -> report
    summary = summarize(final, config["points"], meta_of(config))
    timing = {"requests": len(prompts), "generated": generated, "finished_earlier": len(prompts) - n_todo,
              "generate_wall_s": wall, "output_tokens": out_tokens,
              "output_tokens_per_s": out_tokens / wall if wall > 0 else None,
              "rejection_sampling_extra_rounds": max(0, rounds - 1)}
    if out_dir is not None:
        write_outputs(out_dir, final, config, summary)
        for path in part_files(out_dir):   # merged into samples.jsonl
            os.remove(path)
        with open(os.path.join(out_dir, "timing.json"), "w") as f:
            json.dump(timing, f, indent=2)
    return dict(summary) | {"_timing": timing}
