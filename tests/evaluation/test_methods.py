"""Test-time scaling methods comparison: s1/evaluation/methods.py, the method transforms / rejection
sampling of s1/evaluation/sweep.py, the summary of s1/evaluation/report.py, majority voting in
s1/evaluation/metrics.py (the training-data variants: tests/curate/test_variants.py; the
bench/methods.py smoke run: tests/bench/test_methods.py).

Every expected value below is written out by hand from the documented rules, using a trivial
tokenizer stub (one token per whitespace-separated word) wherever a tokenizer is needed, and a
scripted fake engine (thinking length and answer chosen per question and attempt) for run_eval.
"""
import dataclasses
import json
import math
import re

import pytest

from s1.evaluation import grading, methods, metrics, report, sweep
from s1.evaluation.tasks import TaskItem
from s1.infer.sampling import SamplingParams


def words(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------------------------------
# 1. Prompt and trace renderings
# ------------------------------------------------------------------------------------------


def test_prompt_renderings_are_exact():
    """The three conditional prompts, literally (the model is trained on exactly these strings)."""
    q = "What is 2+2?"
    assert methods.render_tcc(q, 512) == "What is 2+2?\n\nThink for up to 512 tokens."
    assert methods.render_tcc(q, 0) == "What is 2+2?\n\nThink for up to 0 tokens."
    assert methods.render_scc(q, 5) == "What is 2+2?\n\nThink for up to 5 steps."
    assert methods.render_scc(q, 1) == "What is 2+2?\n\nThink for up to 1 steps."  # plural by design
    assert methods.render_ccc(q, "short") == (
        "What is 2+2?\n\nAnswer after a short amount of thinking. Do not spend excessive time "
        "double-checking your work.")
    assert methods.render_ccc(q, "long") == (
        "What is 2+2?\n\nAnswer after a long amount of thinking. If you feel like you are finished early, "
        "spend the extra time trying to double-check your work until you are absolutely sure that you have "
        "the correct answer.")
    # METHODS is the one list of methods (CLI help, bench.methods and reports derive from it)
    assert tuple(sweep.METHODS) == ("budget_forcing", "tcc", "tcc+bf", "scc", "scc+bf", "ccc", "rs", "majority",
                                   "plain")


@pytest.mark.parametrize("call, match", [
    (lambda: methods.render_tcc("q", -1), "token budget must be a non-negative integer, got -1"),
    (lambda: methods.render_tcc("q", 1.5), "token budget must be a non-negative integer, got 1.5"),
    (lambda: methods.render_tcc("q", True), "token budget must be a non-negative integer, got True"),
    (lambda: methods.render_scc("q", -3), "step count must be a non-negative integer, got -3"),
    (lambda: methods.render_scc("q", "4"), "step count must be a non-negative integer, got '4'"),
    (lambda: methods.render_ccc("q", "medium"), "class-conditional class must be 'short' or 'long', got 'medium'"),
    (lambda: methods.steps_for_budget(-1), "token budget must be a non-negative integer"),
    (lambda: methods.steps_for_budget(100, 0), "step_tokens must be >= 1, got 0"),
    (lambda: methods.split_steps("a b", words, 0), "step_tokens must be >= 1, got 0"),
    (lambda: methods.render_step_trace(["a", "b", "c"], 2), "3 steps do not fit a countdown from 2"),
])
def test_rendering_errors_name_the_problem(call, match):
    """Invalid budgets, classes and step sizes raise ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=re.escape(match)):
        call()


def test_steps_for_budget_edges():
    """N tokens -> max(1, N // step_tokens) steps, and 0 steps for N = 0."""
    cases = {0: 0, 1: 1, 99: 1, 100: 1, 199: 1, 200: 2, 1000: 10, 1099: 10}
    for n, want in cases.items():
        assert methods.steps_for_budget(n) == want, n
    assert methods.steps_for_budget(0, 6) == 0
    assert methods.steps_for_budget(5, 6) == 1     # below one step -> 1
    assert methods.steps_for_budget(6, 6) == 1     # exact multiples
    assert methods.steps_for_budget(12, 6) == 2
    assert methods.steps_for_budget(17, 6) == 2
    assert methods.steps_for_budget(18, 6) == 3
    assert methods.steps_for_budget(7, 1) == 7


def test_split_steps_cuts_at_whitespace():
    """Steps close as soon as they reach step_tokens; inner whitespace is kept, ends stripped."""
    assert methods.split_steps("alpha beta gamma delta epsilon", words, 2) == ["alpha beta", "gamma delta", "epsilon"]
    assert methods.split_steps("alpha beta gamma delta", words, 2) == ["alpha beta", "gamma delta"]
    assert methods.split_steps("  one two\nthree  four ", words, 3) == ["one two\nthree", "four"]
    assert methods.split_steps("one two three", words, 100) == ["one two three"]  # one short last step
    assert methods.split_steps("one two three", words, 1) == ["one", "two", "three"]
    # A counter by characters: "aa"(2) + " b"(1) reaches 3; " ccc"(3) alone reaches 3; " d" is left.
    chars = lambda w: len(w.strip())  # noqa: E731
    assert methods.split_steps("aa b ccc d", chars, 3) == ["aa b", "ccc", "d"]
    assert methods.split_steps("", words, 2) == []
    assert methods.split_steps(" \n\t ", words, 2) == []


def test_step_trace_counts_down():
    """scc trace: a "[s steps left]" line before each step, s counting down from the stated steps."""
    assert methods.render_step_trace(["s1", "s2"], 3) == "[3 steps left]\ns1\n[2 steps left]\ns2"
    assert methods.render_step_trace(["only"], 1) == "[1 steps left]\nonly"
    assert methods.render_step_trace(["a b", "c"], 2) == "[2 steps left]\na b\n[1 steps left]\nc"
    assert methods.render_step_trace([], 0) == ""


def test_token_trace_remaining_counts_by_hand():
    """tcc trace: r = N minus the tokens before the marker (marker + step + 2 newlines per step),
    clamped at 0. With the word counter a marker is 3 tokens, so step "a b" uses 3 + 2 + 2 = 7."""
    steps = ["a b", "c d e", "f"]
    assert methods.render_token_trace(steps, 20, words) == (
        "[20 tokens left]\na b\n[13 tokens left]\nc d e\n[5 tokens left]\nf")  # 20-7, 13-(3+3+2)
    # never below 0: 5 - 7 < 0 and 5 - 15 < 0
    assert methods.render_token_trace(steps, 5, words) == (
        "[5 tokens left]\na b\n[0 tokens left]\nc d e\n[0 tokens left]\nf")
    assert methods.render_token_trace(steps, 7, words) == (
        "[7 tokens left]\na b\n[0 tokens left]\nc d e\n[0 tokens left]\nf")
    assert methods.render_token_trace([], 10, words) == ""
    assert methods.TOKEN_MARKER.format(n=4) == "[4 tokens left]"
    assert methods.STEP_MARKER.format(n=4) == "[4 steps left]"


# ------------------------------------------------------------------------------------------
# Methods -> engine requests (s1/evaluation/sweep.py)
# ------------------------------------------------------------------------------------------


def test_every_method_becomes_the_right_engine_request():
    """Budgets 200, 400, step_tokens 100: prompt, engine cap, nominal limits and temperature of
    every method's requests, written out by hand. Prompt-only methods run under the engine's
    "auto" cap (as s1 ran them); rs caps thinking at its budget; ccc adds the bare-question run."""
    opts = sweep.MethodOptions(step_tokens=100, rs_max_attempts=3, rs_temperature=0.7, majority_k=2,
                               majority_budget=300, majority_temperature=0.9)
    points = sweep.make_points([m for m in sweep.METHODS if m != "plain"], [200, 400, "auto"], [0], opts=opts)
    items = [TaskItem("a", "Q", "1", "integer")]
    prompts, params, stubs = sweep.build_requests(items, points, 1, 0.0, 0, {}, SamplingParams)
    short = "Q\n\n" + methods.CCC_SHORT
    long = "Q\n\n" + methods.CCC_LONG
    tcc = "Q\n\nThink for up to {} tokens."
    scc = "Q\n\nThink for up to {} steps."
    # (method, prompt, engine max, nominal max, nominal min, temperature)
    want = [
        ("budget_forcing", "Q", 200, 200, 0, 0.0), ("budget_forcing", "Q", 400, 400, 0, 0.0),
        ("budget_forcing", "Q", "auto", "auto", 0, 0.0),
        ("tcc", tcc.format(200), "auto", 200, 0, 0.0), ("tcc", tcc.format(400), "auto", 400, 0, 0.0),
        ("tcc+bf", tcc.format(200), 200, 200, 0, 0.0), ("tcc+bf", tcc.format(400), 400, 400, 0, 0.0),
        ("scc", scc.format(2), "auto", 200, 0, 0.0), ("scc", scc.format(4), "auto", 400, 0, 0.0),
        ("scc+bf", scc.format(2), 200, 200, 0, 0.0), ("scc+bf", scc.format(4), 400, 400, 0, 0.0),
        ("ccc", "Q", "auto", None, 0, 0.0), ("ccc", short, "auto", None, 0, 0.0),   # bound: the default run
        ("ccc", long, "auto", None, 0, 0.0),
        ("rs", "Q", 200, 200, 0, 0.7), ("rs", "Q", 400, 400, 0, 0.7),
        ("majority", "Q", 300, 300, 0, 0.9), ("majority", "Q", 300, 300, 0, 0.9),  # K = 2 samples
    ]
    got = [(s["method"], q, p.max_thinking_tokens, s["max_thinking_tokens"], s["min_thinking_tokens"], p.temperature)
           for q, p, s in zip(prompts, params, stubs)]
    assert got == want
    assert all(p.min_thinking_tokens == 0 and p.num_wait == 0 for p in params)
    assert [s["sample"] for s in stubs[-2:]] == [0, 1] and params[-2].seed != params[-1].seed
    assert [p.max_attempts for p in points if p.method == "rs"] == [3, 3]
    fixed = sweep.make_points(["ccc"], [100], [0], opts=sweep.MethodOptions(ccc_bound=6109))
    assert [(p.variant, p.max_thinking_tokens, p.min_thinking_tokens) for p in fixed] == [
        ("short", 6109, 0), ("long", None, 6109)]


def test_make_points_errors():
    """Prompt methods need numeric budgets; unknown methods and bad options are refused, naming the flag."""
    with pytest.raises(ValueError, match="--methods tcc needs numeric --budgets"):
        sweep.make_points(["tcc"], [None, "auto"], [0])
    with pytest.raises(ValueError, match="unknown method 'beam'"):
        sweep.make_points(["beam"], [100], [0])
    with pytest.raises(ValueError, match="budget 0 can never fit"):
        sweep.make_points(["rs"], [0, 100], [0])
    assert not sweep.rs_fits({"finish_reason": "length", "thinking_tokens": 7, "max_thinking_tokens": 400,
                              "answer_text": ""})      # the context cut its thinking: not a fit
    assert sweep.rs_fits({"finish_reason": "length", "thinking_tokens": 7, "max_thinking_tokens": 400,
                          "answer_text": "Answer: 3"})  # thinking ended; the answer reached a token cap
    with pytest.raises(ValueError, match="--max-tries must be >= 1"):
        sweep.make_points(["rs"], [100], [0], opts=sweep.MethodOptions(rs_max_attempts=0))
    with pytest.raises(ValueError, match="--ccc-bound must be >= 0"):
        sweep.make_points(["ccc"], [None], [0], opts=sweep.MethodOptions(ccc_bound=-1))
    assert [p.variant for p in sweep.make_points(["ccc"], ["auto"], [0])] == ["default", "short", "long"]


# ------------------------------------------------------------------------------------------
# 2. Rejection sampling
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Out:
    text: str
    thinking: str
    answer: str
    output_token_ids: list
    num_thinking_tokens: int
    num_waits_used: int = 0
    finish_reason: str = "stop"


class ScriptedLLM:
    """generate() call n (0-based) is attempt n + 1 of every prompt in it; SCRIPT[prompt][attempt - 1]
    = (thinking tokens the model wants, answer); the engine cuts thinking at the request's cap (and
    forces the answer). Records every call's prompts and params; reports outputs through on_output."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, params, use_tqdm=True, on_output=None):
        attempt = len(self.calls)
        self.calls.append((list(prompts), list(params)))
        outs = []
        for q, p in zip(prompts, params):
            think, ans = self.script[q][attempt]
            if isinstance(p.max_thinking_tokens, int):
                think = min(think, p.max_thinking_tokens)
            answer = f"Final Answer: {ans}"
            outs.append(Out("t" * think + "\n<|im_start|>answer\n" + answer, "t" * think, answer,
                            [1] * (think + 3), think))
        for i, o in enumerate(outs):
            if on_output is not None:
                on_output(i, o)
        return outs


def test_rejection_sampling_attempt_cap_and_compute(tmp_path):
    """rs at budgets 10 and 45, at most 4 attempts; the engine caps thinking at the budget, and a
    sample that reached the cap is rejected (s1: its vLLM call stopped "length"). qa wants 50, 40,
    8 (answers wrong, right, wrong): at 10 it fits on attempt 3 and that (wrong) sample is graded
    although attempt 2 was right; at 45 attempt 2 fits. qb wants 50, 60, 70, 80 and never fits: it
    stops at attempt 4 (no 5th generation) and counts as wrong although its last answer is right.
    qc fits at once. A setting's compute = the accepted samples' mean thinking tokens."""
    script = {"qa": [(50, "0"), (40, "7"), (8, "0"), (30, "7")],
              "qb": [(50, "0"), (60, "0"), (70, "0"), (80, "8"), (1, "8")],
              "qc": [(5, "1"), (5, "9"), (5, "9"), (5, "9")]}
    items = [TaskItem("a", "qa", "7", "integer"), TaskItem("b", "qb", "8", "integer"),
             TaskItem("c", "qc", "9", "integer")]
    llm = ScriptedLLM(script)
    points = sweep.make_points(["rs"], [10, 45], [0], opts=sweep.MethodOptions(rs_max_attempts=4))
    summ = sweep.run_eval(llm, items, points, out_dir=str(tmp_path), task="fake", model="fake",
                          sampling_params_cls=SamplingParams)
    # one batched call per attempt: 6 first runs, then qa@10 qb@10 qa@45 qb@45, qa@10 qb@10 qb@45, qb@10 qb@45
    assert [c[0] for c in llm.calls] == [["qa", "qb", "qc"] * 2, ["qa", "qb", "qa", "qb"], ["qa", "qb", "qb"],
                                         ["qb", "qb"]]
    assert [p.max_thinking_tokens for p in llm.calls[0][1]] == [10, 10, 10, 45, 45, 45]
    assert all(p.temperature == 1.0 and p.num_wait == 0 for c in llm.calls for p in c[1])
    seeds_qb10 = [c[1][c[0].index("qb")].seed for c in llm.calls]  # qb at budget 10 is first "qb" of every call
    assert len(set(seeds_qb10)) == 4  # every attempt is a fresh sample
    assert summ["_timing"]["rejection_sampling_extra_rounds"] == 3
    recs = {(r["qid"], r["max_thinking_tokens"]): r for r in map(json.loads, open(tmp_path / "samples.jsonl"))}
    want = {  # (attempts, attempt thinking tokens, kept thinking, accepted, answer graded right)
        ("a", 10): (3, [10, 10, 8], 8, True, False),
        ("a", 45): (2, [45, 40], 40, True, True),
        ("b", 10): (4, [10, 10, 10, 10], 10, False, True),
        ("b", 45): (4, [45, 45, 45, 45], 45, False, True),
        ("c", 10): (1, [5], 5, True, False),
        ("c", 45): (1, [5], 5, True, False),
    }
    for key, (att, tts, think, ok, correct) in want.items():
        r = recs[key]
        assert (r["attempts"], r["attempt_thinking_tokens"], r["thinking_tokens"], r["rs_accepted"],
                r["correct"]) == (att, tts, think, ok, correct), key
    p10, p45 = summ["points"]
    assert p10["accuracy"] == 0.0 and p45["accuracy"] == pytest.approx(100 / 3)   # qb never fit: wrong
    assert p10["mean_thinking_tokens"] == p10["compute"] == pytest.approx((8 + 5) / 2)   # accepted only
    assert p45["mean_thinking_tokens"] == p45["compute"] == pytest.approx((40 + 5) / 2)
    assert (p10["mean_attempts"], p10["never_fit"]) == (pytest.approx(8 / 3), 1)
    assert (p45["mean_attempts"], p45["never_fit"]) == (pytest.approx(7 / 3), 1)
    assert p10["control"] == p45["control"] == 1.0            # the settings stay within their budgets
    assert p10["control_runs"] == p45["control_runs"] == pytest.approx(2 / 3)   # qb's runs never fit
    m = summ["methods"]["rs"]
    assert m["control"] == 1.0 and m["control_runs"] == pytest.approx(4 / 6)
    assert m["performance"] == pytest.approx(100 / 3)
    assert m["scaling"] == pytest.approx((100 / 3) / (math.log2(22.5) - math.log2(6.5)))
    assert m["compute"] == [pytest.approx(6.5), pytest.approx(22.5)]
    md = (tmp_path / "summary.md").read_text()
    assert "| rs | 10 | 0 | attempts<=4; 2.7 tries/question (max 4), 1 never fit | 0.0 | 6.5 | 6.5 | <= 10 | 100% | 66.7% |" in md


def test_rejection_sampling_single_attempt_never_retries():
    """rs_max_attempts 1: one generate call; a sample cut at the cap is kept, not accepted, wrong,
    and the setting has no accepted sample (compute 0, no Control verdict)."""
    llm = ScriptedLLM({"qb": [(50, "8")]})
    points = sweep.make_points(["rs"], [10], [0], opts=sweep.MethodOptions(rs_max_attempts=1))
    summ = sweep.run_eval(llm, [TaskItem("b", "qb", "8", "integer")], points, task="fake", model="fake",
                          sampling_params_cls=SamplingParams)
    assert len(llm.calls) == 1 and summ["_timing"]["rejection_sampling_extra_rounds"] == 0
    (p,) = summ["points"]
    assert (p["accuracy"], p["control"], p["control_runs"], p["compute"], p["never_fit"], p["mean_attempts"]) == \
        (0.0, None, 0.0, 0.0, 1, 1.0)
    assert summ["methods"]["rs"]["control"] is None and summ["methods"]["rs"]["control_runs"] == 0.0


class SeededLLM:
    """Rejection sampling's engine double, keyed on the request seed: the sweep gives attempt a of a
    request the seed request_seed(seed, qid, point/attempt=a, sample), so this engine knows which
    attempt it is sent however the attempts are batched. FITS[prompt] = the attempts whose
    thinking ends by itself (5 tokens, answer "7"); every other attempt wants 50 tokens and is cut
    at the cap (answer "0"). Records every call's (prompt, attempt) pairs and its max_num_seqs."""

    def __init__(self, fits, point, seed=0, max_num_seqs=1, most=400):
        self.calls, self.fits = [], fits
        self.engine = type("E", (), {"max_num_seqs": max_num_seqs})()
        self.attempt = {}
        for q in fits:
            for a in range(1, most + 1):
                name = point if a == 1 else f"{point}/attempt={a}"
                self.attempt[sweep.request_seed(seed, q, name, 0)] = (q, a)

    def generate(self, prompts, params, use_tqdm=True, on_output=None):
        pairs = [self.attempt[p.seed] for p in params]
        assert [q for q, _ in pairs] == list(prompts)
        self.calls.append(pairs)
        outs = []
        for q, a in pairs:
            think, ans = (5, "7") if a in self.fits[q] else (50, "0")
            think = min(think, params[0].max_thinking_tokens)
            answer = f"Final Answer: {ans}"
            outs.append(Out("t" * think + "\n<|im_start|>answer\n" + answer, "t" * think, answer,
                            [1] * (think + 3), think))
        for i in reversed(range(len(outs))):      # completion order differs from prompt order
            on_output(i, outs[i])
        return outs


def _rs_run(fits, max_tries=None, rs_batch=None, log=None):
    items = [TaskItem(q, q, "7", "integer") for q in fits]
    (point,) = sweep.make_points(["rs"], [10], [0], opts=sweep.MethodOptions(rs_max_attempts=max_tries))
    llm = SeededLLM(fits, point.name, max_num_seqs=rs_batch or 1)
    summ = sweep.run_eval(llm, items, [point], task="fake", model="fake", progress=False,
                          log=(log.append if log is not None else (lambda m: None)))
    return llm, summ


def test_rejection_sampling_runs_past_64_tries_until_the_thinking_fits(tmp_path):
    """s1 resamples until the thinking fits: qa first fits on try 100 (and again on 103), qc on
    try 70, qb at once. One at a time (1 slot) that takes 100 engine calls; with 16 slots the later
    rounds draw several tries per question (only for questions not yet accepted) and accept the
    FIRST that fits, so the records are the same in 12 calls."""
    fits = {"qa": {100, 103}, "qb": {1}, "qc": {70}}
    one, s_one = _rs_run(fits, rs_batch=1)
    many, s_many = _rs_run(fits, rs_batch=16)
    assert len(one.calls) == 100 and all(len(c) == 1 for c in one.calls[70:])
    # round 1; qa and qc 8 tries each per round (2..73: 9 rounds); qa alone 16 per round (74..105: 2)
    assert len(many.calls) == 12 and max(len(c) for c in many.calls) == 16
    assert many.calls[1] == [("qa", a) for a in range(2, 10)] + [("qc", a) for a in range(2, 10)]
    assert all(q != "qb" for c in many.calls[1:] for q, _ in c)      # accepted questions are not resampled
    for s in (s_one, s_many):
        (p,) = s["points"]
        assert (p["mean_attempts"], p["max_attempts_used"], p["never_fit"]) == (pytest.approx(171 / 3), 100, 0)
        assert p["accuracy"] == 100.0 and p["compute"] == 5.0
    assert s_one["points"] == s_many["points"]
    assert s_many["_timing"]["generated"] > s_one["_timing"]["generated"] == 171


def test_rejection_sampling_does_not_retry_an_engine_error():
    """A request the engine refuses (e.g. a prompt longer than the context) fails on every try:
    without --max-tries it would loop forever; it is recorded once, not accepted."""
    class Failing(SeededLLM):
        def generate(self, prompts, params, use_tqdm=True, on_output=None):
            self.calls.append(list(prompts))
            for i, q in enumerate(prompts):
                on_output(i, Out("", "", "", [], 0, finish_reason="error"))

    (point,) = sweep.make_points(["rs"], [10], [0])
    llm = Failing({"qa": {1}}, point.name)
    summ = sweep.run_eval(llm, [TaskItem("qa", "qa", "7", "integer")], [point], task="f", model="f",
                          progress=False, log=lambda m: None)
    assert len(llm.calls) == 1
    (p,) = summ["points"]
    assert (p["errors"], p["never_fit"], p["mean_attempts"]) == (1, 1, 1.0)


def test_rejection_sampling_stops_at_max_tries_with_a_report(tmp_path):
    """--max-tries 64: qa (fits on try 100) and qc (try 70) give up after 64 samples, are kept as
    not accepted and count as wrong; the log and the summary's tries table say so."""
    fits = {"qa": {100}, "qb": {1}, "qc": {70}}
    items = [TaskItem(q, q, "7", "integer") for q in fits]
    (point,) = sweep.make_points(["rs"], [10], [0], opts=sweep.MethodOptions(rs_max_attempts=64))
    llm = SeededLLM(fits, point.name, max_num_seqs=16)
    log = []
    summ = sweep.run_eval(llm, items, [point], task="fake", model="fake", progress=True, log=log.append,
                          out_dir=str(tmp_path))    # progress: the rejection-sampling bar on stderr
    assert max(a for c in llm.calls for _, a in c) == 64           # never a 65th sample
    recs = {r["qid"]: r for r in map(json.loads, open(tmp_path / "samples.jsonl"))}
    assert [(recs[q]["attempts"], recs[q]["rs_accepted"], recs[q]["correct"]) for q in ("qa", "qb", "qc")] == \
        [(64, False, False), (1, True, True), (64, False, False)]
    assert len(recs["qa"]["attempt_thinking_tokens"]) == 64
    (p,) = summ["points"]
    assert (p["mean_attempts"], p["max_attempts_used"], p["never_fit"], p["accuracy"]) == \
        (pytest.approx(43.0), 64, 2, pytest.approx(100 / 3))
    assert any("2 question(s) did not fit within --max-tries 64 and count as wrong" in m for m in log)
    md = (tmp_path / "summary.md").read_text()
    assert "| rejection sampling budget | tries per question (mean) | tries (max) | never fit |" in md
    assert "| 10 | 43.0 | 64 | 2 | 5.0 | 33.3 |" in md


def test_class_conditional_bound_is_the_default_runs_mean(tmp_path):
    """ccc runs the bare question ("default") beside the short and long prompts; the default run's
    mean thinking tokens bound them: short at most, long at least. With the paper's AIME24 means
    (default 6109, short 8033, long 9651) short misses and long holds: Control 1 of 2 = 50%."""
    think = {"Q": 6109, "Q\n\n" + methods.CCC_SHORT: 8033, "Q\n\n" + methods.CCC_LONG: 9651}
    llm = ScriptedLLM({q: [(t, "1")] for q, t in think.items()})
    points = sweep.make_points(["ccc"], ["auto"], [0])
    summ = sweep.run_eval(llm, [TaskItem("a", "Q", "1", "integer")], points, out_dir=str(tmp_path), task="fake",
                          model="fake", sampling_params_cls=SamplingParams)
    assert [p.max_thinking_tokens for p in llm.calls[0][1]] == ["auto"] * 3
    assert summ["ccc_bound"] == 6109.0
    default, short, long = summ["points"]
    assert default["reference"] and (default["a_min"], default["a_max"], default["control"]) == (None, None, None)
    assert (short["a_min"], short["a_max"], short["control"]) == (None, 6109.0, 0.0)
    assert (long["a_min"], long["a_max"], long["control"]) == (6109.0, None, 1.0)
    m = summ["methods"]["ccc"]
    assert m["control"] == 0.5 and m["points"] == 2 and m["mean_thinking_tokens"] == [8033.0, 9651.0]
    assert "bounded by the default run's 6109.0 mean thinking tokens" in (tmp_path / "summary.md").read_text()


def test_rejection_sampling_default_has_no_cap():
    """s1 resampled until the thinking fit: no limit unless --max-tries says so."""
    assert sweep.MethodOptions().rs_max_attempts is None
    (p,) = sweep.make_points(["rs"], [3500], [0])
    assert (p.max_attempts, p.temperature, p.variant, p.name) == (None, 1.0, "", "rs/max=3500/wait=0")


# ------------------------------------------------------------------------------------------
# 3. Majority voting tie-break
# ------------------------------------------------------------------------------------------


def test_majority_vote_ties_go_to_the_first_drawn_answer():
    """Documented rule: largest grader-equivalence group; a tie goes to the group whose first member
    was drawn first; None does not vote. Moving Nones or a minority answer that comes after both
    tied answers' first appearance cannot change the winner."""
    assert grading.majority_vote(["3", "5", "5", "3"]) == "3"
    assert grading.majority_vote(["5", "3", "3", "5"]) == "5"
    for answers in (["3", "5", "7", "5", "3"], ["3", "5", "5", "7", "3"], ["3", "5", "5", "3", "7"],
                    [None, "3", None, "5", "5", None, "3"], ["3", None, "5", "7", "3", "5", None]):
        assert grading.majority_vote(answers) == "3", answers
    assert grading.majority_vote(["5", "3", "3"]) == "3"  # a real majority beats first-drawn
    # equivalent answers share a group; the first member represents it: 1/2 ~ 0.5 (2 votes) vs 3 (2)
    assert grading.majority_vote(["3", "1/2", "0.5", "3"], "math") == "3"
    assert grading.majority_vote(["1/2", "3", "0.5", "3"], "math") == "1/2"
    assert grading.majority_vote(["007", "5", "7"], "integer") == "007"
    assert grading.majority_vote([None, None]) is None
    assert grading.majority_vote([]) is None


def test_majority_curve_ties_by_sample_order_not_record_order():
    """majority@2 of a right and a wrong answer is decided by which was sampled first (field
    `sample`), whatever order the records come in; a question nobody answered is wrong."""
    def rec(q, s, ans):
        return {"qid": q, "sample": s, "extracted": ans, "reference": "4", "kind": "integer", "thinking_tokens": 10}

    records = [rec("x", 1, "5"), rec("x", 0, "4"), rec("y", 0, "5"), rec("y", 1, "4"), rec("z", 1, None),
               rec("z", 0, None)]
    curve = metrics.majority_curve(grading.group_votes(records))
    # k=1: x right (sample 0 = "4"), y wrong, z wrong; k=2: ties -> first drawn: same
    assert curve == [{"k": 1, "accuracy": pytest.approx(100 / 3), "compute": 10.0},
                     {"k": 2, "accuracy": pytest.approx(100 / 3), "compute": 20.0}]
    assert metrics.majority_curve(grading.group_votes(list(reversed(records)))) == curve


# ------------------------------------------------------------------------------------------
# 4. Comparison report from a fixed result table
# ------------------------------------------------------------------------------------------


def fixed_table():
    """Two questions (answers 1 and 2), budgets 100 / 200 / 400 for budget_forcing and tcc, and a
    majority point (cap 400, K = 4). (qid -> thinking tokens, answer) per point:
      bf   100: q0 100 wrong, q1 100 wrong    -> acc 0,   think 100
           200: q0 200 right, q1 200 wrong    -> acc 50,  think 200
           400: q0 400 right, q1 400 wrong    -> acc 50,  think 400
      tcc  100: q0 100 wrong, q1 300 right    -> acc 50,  think 200 (q1 over)
           200: q0 150 right, q1 250 right    -> acc 100, think 200 (q1 over)
           400: q0 800 wrong, q1 800 wrong    -> acc 0,   think 800 (both over)
      majority q0 answers 1 2 2 1 (100 tokens each), q1 answers 3 2 2 2 (200, 200, 200, 500)."""
    opts = sweep.MethodOptions(majority_k=4, majority_budget=400)
    points = sweep.make_points(["budget_forcing", "tcc", "majority"], [100, 200, 400], [0], opts=opts)
    table = {
        "budget_forcing": {100: [(100, "0"), (100, "0")], 200: [(200, "1"), (200, "0")], 400: [(400, "1"), (400, "0")]},
        "tcc": {100: [(100, "0"), (300, "2")], 200: [(150, "1"), (250, "2")], 400: [(800, "0"), (800, "0")]},
    }
    maj = {"q0": [(100, "1"), (100, "2"), (100, "2"), (100, "1")],
           "q1": [(200, "3"), (200, "2"), (200, "2"), (500, "2")]}
    ref = {"q0": "1", "q1": "2"}
    records = []
    for p in points:
        d = p.to_dict()
        for qi, q in enumerate(("q0", "q1")):
            runs = maj[q] if p.method == "majority" else [table[p.method][p.max_thinking_tokens][qi]]
            for s, (think, ans) in enumerate(runs):
                records.append({"qid": q, "point": p.name, "method": p.method, "sample": s, "reference": ref[q],
                                "kind": "integer", "max_thinking_tokens": d["max_thinking_tokens"],
                                "min_thinking_tokens": 0, "thinking_tokens": think, "extracted": ans,
                                "correct": ans == ref[q], "waits_used": 0, "finish_reason": "stop",
                                "answer_text": f"Final Answer: {ans}"})
    return points, records


META = {"task": "fixed", "model": "none", "num_questions": 2, "samples": 1, "temperature": 0.0, "seed": 0}


def test_summary_metrics_equal_hand_computation(tmp_path):
    """Control (share of settings within their cap) / Control (runs) / Scaling (mean pairwise slope
    over log2 compute) / Performance per method, from the fixed table, and the markdown comparison
    table showing them (budget forcing Control 100%)."""
    points, records = fixed_table()
    summ = report.summarize(grading.group_votes(records), [p.to_dict() for p in points], META)   # records -> grades -> report
    bf, tcc, maj = (summ["methods"][m] for m in ("budget_forcing", "tcc", "majority"))
    # bf curve (100, 0) (200, 50) (400, 50): slopes 50/1, 50/2, 0/1
    assert bf["control"] == 1.0 and bf["control_runs"] == 1.0
    assert bf["scaling"] == pytest.approx((50 + 25 + 0) / 3)
    assert bf["performance"] == 50.0
    assert bf["mean_thinking_tokens"] == [100.0, 200.0, 400.0]
    # tcc curve (200, 50) (200, 100) (800, 0): the equal-compute pair has no slope; -50/2, -100/2
    # settings: 100 (mean 200 > 100: out), 200 (200 <= 200: in), 400 (800: out) -> 1 of 3;
    # runs: q0@100 and q0@200 within -> 2 of 6
    assert tcc["control"] == pytest.approx(1 / 3) and tcc["control_runs"] == pytest.approx(2 / 6)
    assert [r["control"] for r in summ["points"][3:6]] == [0.0, 1.0, 0.0]
    assert tcc["scaling"] == pytest.approx((-25 - 50) / 2)
    assert tcc["performance"] == 100.0
    assert tcc["mean_thinking_tokens"] == [200.0, 200.0, 800.0]
    # majority@1: q0 "1" right, q1 "3" wrong; @2: ties -> first drawn, same; @4: q0 2-2 tie -> "1"
    # right, q1 "2" x3 right. compute = mean over questions of the k samples' total thinking.
    assert [(r["k"], r["accuracy"], r["compute"], r["mean_thinking_tokens"]) for r in summ["points"][6:]] == [
        (1, 50.0, 150.0, 150.0), (2, 50.0, 300.0, 150.0), (4, 100.0, 750.0, 187.5)]
    assert [r["pass@1"] for r in summ["points"][6:]] == [50.0, 50.0, 62.5]
    # every k's mean thinking per sample (150, 150, 187.5) is within the 400 cap; one 500-token run is not
    assert maj["control"] == 1.0 and maj["control_runs"] == pytest.approx(7 / 8)
    assert maj["scaling"] == pytest.approx((0 + 50 / math.log2(5) + 50 / math.log2(2.5)) / 3)
    assert maj["performance"] == 100.0
    assert maj["compute"] == [150.0, 300.0, 750.0]

    md = report.summary_markdown(summ)
    assert ("| budget_forcing | 100.0% | 100.0% | 25.0 | 50.0 | 100.0 / 200.0 / 400.0 | "
            "100.0 / 200.0 / 400.0 |") in md
    assert "| tcc | 33.3% | 33.3% | -37.5 | 100.0 | 200.0 / 200.0 / 800.0 | 200.0 / 200.0 / 800.0 |" in md
    s_maj = (0 + 50 / math.log2(5) + 50 / math.log2(2.5)) / 3
    assert (f"| majority | 100.0% | 87.5% | {s_maj:.1f} | 100.0 | 150.0 / 150.0 / 187.5 | "
            "150.0 / 300.0 / 750.0 |") in md
    assert "| tcc | 400 | 0 | - | 0.0 | 800.0 | 800.0 | <= 400 | 0% | 0.0% |" in md
    assert "| majority | 400 | 0 | K=4 k=4 | 100.0 | 187.5 | 750.0 | <= 400 | 100% | 87.5% |" in md

    # the same numbers after a round trip through samples.jsonl + --rescore (re-extracts answers)
    config = dict(META, base_params={}, points=[p.to_dict() for p in points])
    report.write_outputs(str(tmp_path), records, config, summ)
    again = report.rescore(str(tmp_path), str(tmp_path / "re"))
    assert again["methods"] == summ["methods"]
    assert (tmp_path / "re" / "summary.md").read_text() == md
