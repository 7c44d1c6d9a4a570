"""`s1 eval`'s sweep (s1/evaluation/sweep.py and its summary, s1/evaluation/report.py); the CLI,
tasks and plots have their own test files.

Two levels:
- a fake engine whose behaviour is known exactly (answers right iff the budget reaches a
  per-question need) -> the summary must equal hand-computed accuracies / Control / Scaling;
- the real engine on a tiny random-weight Qwen2 model with the real tokenizer, end to end through
  `main()` for every task format (aime24, aime25, math500, amc23, GPQA synthetic fixture), then
  `--rescore` must reproduce summary.json exactly; an interrupted run (SIGINT) keeps its finished
  records and `--resume` completes it with the summary of an uninterrupted run.
"""
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from s1.evaluation import cli, report, sweep
from s1.evaluation.tasks import TaskItem
from s1.infer.sampling import SamplingParams
from tests.evaluation.helpers import FakeLLM

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_fake_engine_sweep_matches_hand_computation(tmp_path):
    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    need = {"q0": 100, "q1": 300, "q2": 600, "q3": 5000}
    llm = FakeLLM(need, {f"q{i}": str(10 + i) for i in range(4)})
    points = sweep.make_points(["budget_forcing"], [128, 512, 1024], [0])
    summ = sweep.run_eval(llm, items, points, out_dir=str(tmp_path), task="fake", model="fake",
                          sampling_params_cls=SamplingParams)
    assert llm.calls == 1  # every point in ONE batched engine call
    acc = [r["accuracy"] for r in summ["points"]]
    think = [r["mean_thinking_tokens"] for r in summ["points"]]
    assert acc == [25.0, 50.0, 75.0]
    assert think == [(100 + 128 * 3) / 4, (100 + 300 + 512 * 2) / 4, (100 + 300 + 600 + 1024) / 4]
    m = summ["methods"]["budget_forcing"]
    assert m["control"] == 1.0 and m["control_runs"] == 1.0 and m["performance"] == 75.0
    c = list(zip(think, acc))
    slopes = [(fb - fa) / (math.log2(cb) - math.log2(ca)) for i, (ca, fa) in enumerate(c) for cb, fb in c[i + 1:]]
    assert m["scaling"] == pytest.approx(sum(slopes) / 3)
    for f in ("config.json", "samples.jsonl", "summary.json", "summary.md", "scaling.png", "timing.json"):
        assert (tmp_path / f).exists(), f
    rows = [json.loads(x) for x in open(tmp_path / "samples.jsonl")]
    assert len(rows) == 12 and {"qid", "point", "extracted", "correct", "thinking_tokens", "waits_used"} <= set(rows[0])
    # written in completion order, rewritten sorted by (point, question, sample) at the end
    assert [(r["point"], r["qid"]) for r in rows] == [(p.name, str(i)) for p in points for i in range(4)]
    # Re-scoring reproduces the summary byte for byte.
    before = (tmp_path / "summary.json").read_text()
    report.rescore(str(tmp_path), str(tmp_path / "re"))
    assert (tmp_path / "re" / "summary.json").read_text() == before
    assert (tmp_path / "re" / "summary.md").read_text() == (tmp_path / "summary.md").read_text()


def test_auto_budget_point_is_limited_by_the_resolved_cap(tmp_path):
    """An "auto" point goes to the engine as "auto"; its limit for Control is the cap the engine
    reports back (FakeLLM resolves it to 1000): q3 (need 5000) is cut at 1000, q0..q2 end by themselves."""
    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    llm = FakeLLM({"q0": 100, "q1": 300, "q2": 600, "q3": 5000}, {f"q{i}": str(10 + i) for i in range(4)})
    points = sweep.make_points(["budget_forcing"], [512, "auto"], [0])
    assert [p.name for p in points] == ["budget_forcing/max=512/wait=0", "budget_forcing/max=auto/wait=0"]
    prompts, params, stubs = sweep.build_requests(items, points, 1, 0.0, 0, {}, SamplingParams)
    assert [p.max_thinking_tokens for p in params] == [512] * 4 + ["auto"] * 4
    summ = sweep.run_eval(llm, items, points, task="fake", model="fake", sampling_params_cls=SamplingParams)
    auto = summ["points"][1]
    assert (auto["a_max"], auto["mean_thinking_tokens"], auto["accuracy"]) == (1000, 500.0, 75.0)
    assert auto["control"] == 1.0 and auto["control_runs"] == 1.0


def test_fake_engine_waits_and_majority(tmp_path):
    items = [TaskItem("a", "qa", "7", "math"), TaskItem("b", "qb", "8", "math")]
    llm = FakeLLM({"qa": 50, "qb": 250}, {"qa": "7", "qb": "8"})
    points = sweep.make_points(["budget_forcing"], [None], [0, 2])
    summ = sweep.run_eval(llm, items, points, samples=2, temperature=1.0, out_dir=str(tmp_path),
                          task="fake", model="fake", sampling_params_cls=SamplingParams)
    rows = summ["points"]
    assert [r["num_wait"] for r in rows] == [0, 2]
    assert [r["mean_thinking_tokens"] for r in rows] == [150.0, 350.0]
    assert [r["mean_waits_used"] for r in rows] == [0.0, 2.0]
    m = summ["methods"]["budget_forcing"]
    assert m["control"] is None and m["control_runs"] is None  # no limits -> nothing to control
    maj = summ["majority"]["budget_forcing/max=none/wait=0"]["curve"]
    assert [c["k"] for c in maj] == [1, 2] and [c["compute"] for c in maj] == [150.0, 300.0]
    assert [c["accuracy"] for c in maj] == [100.0, 100.0]


def test_majority_with_waits_and_64_samples_in_one_engine_call():
    """Majority voting with extensions (s1's Wait x2, K = 64): K x questions requests go to ONE
    generate call, every sample carries num_wait and its own seed, and k runs 1, 2, 4 .. 64."""
    items = [TaskItem(c, "q" + c, "7", "integer") for c in "abc"]
    llm = FakeLLM({"qa": 50, "qb": 250, "qc": 10}, {"qa": "7", "qb": "7", "qc": "7"})
    opts = sweep.MethodOptions(majority_k=64, majority_budget="auto", majority_num_wait=2)
    points = sweep.make_points(["majority"], [1000], [0], opts=opts)
    assert [p.name for p in points] == ["majority/max=auto/wait=2/K=64"]
    prompts, params, _ = sweep.build_requests(items, points, 1, 0.0, 0, {}, SamplingParams)
    assert len(prompts) == 3 * 64 and {p.num_wait for p in params} == {2} and {p.temperature for p in params} == {1.0}
    assert len({p.seed for p in params}) == 3 * 64
    summ = sweep.run_eval(llm, items, points, task="fake", model="fake", sampling_params_cls=SamplingParams)
    assert llm.calls == 1
    assert [r["k"] for r in summ["points"]] == [1, 2, 4, 8, 16, 32, 64]
    assert summ["points"][0]["mean_waits_used"] == 2.0 and summ["points"][0]["a_max"] == FakeLLM.AUTO_CAP


def test_request_seeds_are_stable_and_distinct():
    s = {sweep.request_seed(0, q, "p", k) for q in "abc" for k in range(4)}
    assert len(s) == 12
    assert sweep.request_seed(0, "a", "p", 0) == sweep.request_seed(0, "a", "p", 0)


def test_budget_lists_parse_with_flag_names():
    assert sweep.parse_budgets("500, 1000,auto,none") == [500, 1000, "auto", None]
    assert sweep.parse_int_list("0,1,2", "--num-wait") == [0, 1, 2]
    with pytest.raises(ValueError, match="--budgets: '12x' is not an integer"):
        sweep.parse_budgets("12x")
    with pytest.raises(ValueError, match="--num-wait: -1 is negative"):
        sweep.parse_int_list("-1", "--num-wait")


def test_resume_refuses_a_different_sweep(tmp_path):
    items = [TaskItem("a", "qa", "7", "integer")]
    pts = sweep.make_points(["budget_forcing"], [100], [0])
    llm = FakeLLM({"qa": 50}, {"qa": "7"})
    sweep.run_eval(llm, items, pts, out_dir=str(tmp_path), task="fake", model="fake", sampling_params_cls=SamplingParams)
    other = sweep.make_points(["budget_forcing"], [200], [0])
    with pytest.raises(ValueError, match="holds a different sweep .*points"):
        sweep.run_eval(llm, items, other, out_dir=str(tmp_path), task="fake", model="fake", resume=True,
                       sampling_params_cls=SamplingParams)
    # the same sweep resumed: nothing left to generate, same summary
    again = sweep.run_eval(llm, items, pts, out_dir=str(tmp_path), task="fake", model="fake", resume=True,
                           sampling_params_cls=SamplingParams)
    assert llm.calls == 1 and again["_timing"]["generated"] == 0 and again["_timing"]["finished_earlier"] == 1


def test_resume_refuses_another_thinking_format(tmp_path):
    """config.json records the engine tokenizer's thinking format: the same sweep resumed under
    other --thinking-* flags (here the <think> format) would mix two formats' records: refused."""
    from types import SimpleNamespace

    from s1.model import thinking
    items = [TaskItem("a", "qa", "7", "integer")]
    pts = sweep.make_points(["budget_forcing"], [100], [0])
    llm = FakeLLM({"qa": 50}, {"qa": "7"})
    llm.tokenizer = SimpleNamespace(thinking_format=thinking.S1)
    kw = dict(out_dir=str(tmp_path), task="fake", model="fake", sampling_params_cls=SamplingParams)
    sweep.run_eval(llm, items, pts, **kw)
    assert json.loads((tmp_path / "config.json").read_text())["thinking_format"]["end"] == "<|im_start|>answer"
    llm.tokenizer = SimpleNamespace(thinking_format=thinking.THINK)
    with pytest.raises(ValueError, match="holds a different sweep .*thinking_format"):
        sweep.run_eval(llm, items, pts, resume=True, **kw)
    llm.tokenizer = SimpleNamespace(thinking_format=thinking.S1)
    assert sweep.run_eval(llm, items, pts, resume=True, **kw)["_timing"]["generated"] == 0


class InterruptingLLM(FakeLLM):
    """Raises KeyboardInterrupt (as Ctrl-C would) after `stop_after` outputs were reported."""

    def __init__(self, *a, stop_after=None):
        super().__init__(*a)
        self.stop_after = stop_after

    def generate(self, prompts, params, use_tqdm=True, on_output=None):
        n = [0]

        def report(i, out):
            if self.stop_after is not None and n[0] == self.stop_after:
                raise KeyboardInterrupt
            n[0] += 1
            on_output(i, out)
        return super().generate(prompts, params, use_tqdm, report)


def test_interrupted_run_keeps_finished_records_and_resume_runs_only_the_rest(tmp_path):
    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    need = {"q0": 100, "q1": 300, "q2": 600, "q3": 5000}
    answers = {f"q{i}": str(10 + i) for i in range(4)}
    points = sweep.make_points(["budget_forcing"], [128, 512, 1024], [0])
    kw = dict(task="fake", model="fake", sampling_params_cls=SamplingParams)
    sweep.run_eval(FakeLLM(need, answers), items, points, out_dir=str(tmp_path / "whole"), **kw)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        sweep.run_eval(InterruptingLLM(need, answers, stop_after=5), items, points, out_dir=str(run), **kw)
    kept = [json.loads(x) for x in open(run / "samples.jsonl")]
    assert len(kept) == 5 and not (run / "summary.json").exists()
    llm = InterruptingLLM(need, answers)
    summ = sweep.run_eval(llm, items, points, out_dir=str(run), resume=True, **kw)
    assert summ["_timing"]["generated"] == 7 and summ["_timing"]["finished_earlier"] == 5
    assert (run / "summary.json").read_text() == (tmp_path / "whole" / "summary.json").read_text()
    assert (run / "samples.jsonl").read_text() == (tmp_path / "whole" / "samples.jsonl").read_text()


# ------------------------------------------------------------------------------------------
# Real engine, tiny random model, every task format through the CLI
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    from tests.conftest import require_shared_data

    d = tmp_path_factory.mktemp("tiny_eval_model")
    make_tiny_checkpoint(d, require_shared_data() / "qwen2.5-tokenizer", seed=0, max_positions=2048)
    return d


@pytest.mark.parametrize("task", ["aime24", "aime25", "math500", "amc23", "gpqa_diamond"])
def test_real_engine_sweep_every_task_and_rescore(task, tiny_model_dir, shared_data, tmp_path):
    from s1 import kernels

    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--task", task, "--budgets", "4,12", "--num-wait", "0,1",
            "--limit", "2", "--max-answer-tokens", "6", "--out", str(out)]
    argv += (["--data-file", str(FIXTURES / "gpqa_synthetic.jsonl")] if task == "gpqa_diamond"
             else ["--data-dir", str(shared_data / "eval")])
    with kernels.use_backend("torch"):
        assert cli.main(argv) == 0
    summ = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in open(out / "samples.jsonl")]
    assert len(rows) == 2 * 4 and summ["num_questions"] == 2
    assert [(p["max_thinking_tokens"], p["num_wait"]) for p in summ["points"]] == [(4, 0), (4, 1), (12, 0), (12, 1)]
    for r in rows:  # budget forcing: a random model never ends thinking early, so it hits the cap
        assert r["finish_reason"] in ("stop", "length") and r["error"] is None
        assert r["thinking_tokens"] <= r["max_thinking_tokens"]
        assert "<|im_start|>answer" in r["text"] or r["answer_text"]
    assert summ["methods"]["budget_forcing"]["control"] == 1.0
    assert [p["mean_thinking_tokens"] for p in summ["points"]][::2] == [4.0, 12.0]
    assert (out / "scaling.png").stat().st_size > 0
    assert cli.main(["--rescore", str(out), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "summary.json").read_text() == (out / "summary.json").read_text()


def test_sigint_keeps_finished_records_and_resume_finishes_the_run(tiny_model_dir, shared_data, tmp_path):
    """`python -m s1.evaluation` on a tiny random-weight checkpoint, interrupted with SIGINT once the
    first records are on disk: it exits 130 keeping them (every line a whole record), and
    `--resume` into the same folder runs only the rest and ends with the summary of an
    uninterrupted run. A random model never ends thinking, so budget-2 requests finish after a few
    steps and budget-400 ones ~400 steps later: the interrupt lands between them."""
    from s1 import kernels

    common = ["--model", str(tiny_model_dir), "--task", "aime24", "--data-dir", str(shared_data / "eval"),
              "--limit", "3", "--budgets", "2,400", "--max-answer-tokens", "4", "--no-progress", "--threads", "1"]
    with kernels.use_backend("torch"):
        assert cli.main(common + ["--out", str(tmp_path / "whole")]) == 0
    run = tmp_path / "run"
    samples = run / "samples.jsonl"
    env = dict(os.environ, S1_KERNELS="torch", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "s1.evaluation", *common, "--out", str(run)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (samples.exists() and samples.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"eval ended before it could be interrupted: {proc.stderr.read()}"
            assert time.time() < deadline, "no record after 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, err
    assert "--resume" in err and "Traceback" not in err
    kept = [json.loads(x) for x in samples.read_text().splitlines()]
    assert 1 <= len(kept) < 6 and not (run / "summary.json").exists()
    with kernels.use_backend("torch"):
        assert cli.main(common + ["--out", str(run), "--resume"]) == 0
    timing = json.loads((run / "timing.json").read_text())
    assert timing["finished_earlier"] == len(kept) and timing["generated"] == 6 - len(kept)
    assert (run / "summary.json").read_text() == (tmp_path / "whole" / "summary.json").read_text()


# ------------------------------------------------------------------------------------------
# --no-think: plain chat (Table 1's Qwen2.5-32B-Instruct row, majority voting on it)
# ------------------------------------------------------------------------------------------


class _Spy:
    """Passes everything to a real LLM; keeps what generate() was sent."""

    def __init__(self, llm):
        self._llm, self.calls = llm, []

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def generate(self, prompts, params, **kw):
        self.calls.append((list(prompts), list(params), {k: v for k, v in kw.items() if k != "on_output"}))
        return self._llm.generate(prompts, params, **kw)


def test_no_think_renders_plain_chat_and_decodes_as_naive_greedy(tiny_model_dir, tmp_path):
    """--no-think: the prompt is the chat template's without the thinking start, sent raw with no
    thinking rules; the engine's greedy tokens equal a naive full-recompute decode of that prompt,
    and the records carry no thinking (the whole output is the answer)."""
    import torch

    from s1 import kernels
    from s1.infer import LLM
    from s1.infer.cli import render_chat_prompt
    from s1.model.loading import load_model
    from s1.model.tokenizer import THINK_START, Tokenizer
    from tests.helpers import naive_greedy

    tok = Tokenizer.from_pretrained(tiny_model_dir)
    model = load_model(tiny_model_dir, dtype=torch.float32)

    qs = ["What is 2+3?", "Name a prime."]
    plain = [render_chat_prompt(tok, q) for q in qs]
    for q, p in zip(qs, plain):
        assert tok.render_prompt(q) == p + THINK_START and p.endswith("<|im_start|>assistant\n")
        assert "think" not in p
    points = sweep.make_points(["budget_forcing"], [None], [0], thinking=False)
    assert [(p.name, p.method, p.thinking) for p in points] == [("plain/no-think", "plain", False)]
    items = [TaskItem(f"q{i}", q, "5", "integer") for i, q in enumerate(qs)]
    with kernels.use_backend("torch"):
        spy = _Spy(LLM(model=model, tokenizer=tok, page_size=4, num_pages=64, max_model_len=256))
        summ = sweep.run_eval(spy, items, points, base_params={"max_tokens": 6}, out_dir=str(tmp_path),
                              task="t", model="tiny", progress=False)
    ((sent, params, kw),) = spy.calls
    assert sent == plain and kw["raw"] is True
    assert all((p.max_thinking_tokens, p.min_thinking_tokens, p.num_wait) == (None, 0, 0) for p in params)
    recs = [json.loads(x) for x in open(tmp_path / "samples.jsonl")]
    for r, p in zip(recs, plain):
        want = tok.decode(naive_greedy(model, tok.encode(p), 6, tok.vocab_size))
        assert (r["text"], r["answer_text"], r["thinking"], r["thinking_tokens"]) == (want, want, "", 0)
    (row,) = summ["points"]
    assert row["thinking"] is False and row["method"] == "plain"
    assert all(r["plain"] and r["output_tokens"] == 6 for r in recs)
    assert (row["compute"], row["compute_of"]) == (6.0, "output tokens")   # no thinking: output tokens count
    md = (tmp_path / "summary.md").read_text()
    assert "| plain | no thinking |" in md and "Plain chat (--no-think)" in md


class _PlainLLM:
    """A plain-chat engine double: question -> its answers in sample order (no thinking)."""

    def __init__(self, answers):
        self.answers, self.seen, self.tokenizer = answers, {}, None

    def generate(self, prompts, params, use_tqdm=True, on_output=None, raw=False):
        from tests.evaluation.helpers import FakeOut
        assert raw and all(p.max_thinking_tokens is None and p.num_wait == 0 for p in params)
        outs = []
        for q, p in zip(prompts, params):
            n = self.seen[q] = self.seen.get(q, -1) + 1
            a = self.answers[q][n]
            outs.append(FakeOut(q, "", a, a, [1, 2, 3], 0, 0, "stop"))
        for i, o in enumerate(outs):
            on_output(i, o)
        return outs


def test_no_think_majority_grades_plain_answers(monkeypatch):
    """Majority voting combines with --no-think: K plain samples per question, graded as s1
    extracts plain answers (the last \\boxed{}, else after "Answer:"), voted per k."""
    monkeypatch.setattr(sweep, "render_chat_prompt", lambda tok, q: f"<chat>{q}")
    answers = {"<chat>qa": ["so it is \\boxed{5}.", "Answer: 7", "We get 7. Answer: 7"],
               "<chat>qb": ["Answer: 3", "\\boxed{3}", "\\boxed{4}"]}
    points = sweep.make_points(["majority"], [None], [0], opts=sweep.MethodOptions(majority_k=3), thinking=False)
    assert [p.name for p in points] == ["majority/no-think/K=3"]
    items = [TaskItem("a", "qa", "7", "integer"), TaskItem("b", "qb", "3", "integer")]
    summ = sweep.run_eval(_PlainLLM(answers), items, points, task="t", model="m", progress=False)
    rows = {r["k"]: r for r in summ["points"]}
    assert rows[1]["accuracy"] == 50.0        # sample 0: qa 5 (wrong), qb 3 (right)
    assert rows[2]["accuracy"] == 50.0        # qa: 5 vs 7 tie -> first drawn (5); qb: 3, 3
    assert rows[3]["accuracy"] == 100.0       # qa: 7 twice; qb: 3 twice
    assert rows[3]["pass@1"] == pytest.approx(100 * 4 / 6)
    # no thinking phase: compute is output tokens (3 per sample here), k samples' total for majority@k
    assert rows[3]["mean_thinking_tokens"] == 3.0 and [rows[k]["compute"] for k in (1, 2, 3)] == [3.0, 6.0, 9.0]


def test_no_think_refuses_thinking_settings():
    with pytest.raises(ValueError, match="--no-think: --methods rs needs a thinking phase"):
        sweep.make_points(["rs"], [None], [0], thinking=False)
    with pytest.raises(ValueError, match="no --budgets"):
        sweep.make_points(["budget_forcing"], [500], [0], thinking=False)
    with pytest.raises(ValueError, match="add --no-think"):
        sweep.make_points(["plain"], [500], [0])
    for argv in (["--max-tries", "0"], ["--rs-max-attempts", "0"]):    # the old name is an alias
        with pytest.raises(ValueError, match="--max-tries must be >= 1, got 0"):
            cli.check_flags(cli.build_parser().parse_args(argv))
    for extra in (["--budgets", "500"], ["--num-wait", "1"], ["--majority-budget", "100"]):
        a = cli.build_parser().parse_args(["--no-think"] + extra)
        with pytest.raises(ValueError, match="--no-think has no thinking phase to budget: drop " + extra[0]):
            cli.check_flags(a)


# ------------------------------------------------------------------------------------------
# Budgets above what the context holds
# ------------------------------------------------------------------------------------------


def test_budget_above_the_context_is_warned_once_and_marked(tiny_model_dir, shared_data, tmp_path, capsys):
    """--max-model-len 512: budget 4 fits, budget 400 cannot act (the prompt, the forced end and
    s1's 100-token margin leave less): one warning for 400, its records marked with the context's
    limit (computed here from the tokenizer), the summary row, markdown and plot label marked.
    The same run has rejection sampling on the real engine with --max-tries 3 and 4 slots: a random
    model never ends its thinking by itself, so every question stops at 3 tries, rejected (at 400
    the context and --max-tokens cut the thinking: no answer, no fit either), and the log and the
    tries table say so."""
    from s1 import kernels
    from s1.evaluation.plots import point_tag
    from s1.evaluation.tasks import load_task
    from s1.model.tokenizer import Tokenizer

    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--task", "aime24", "--data-dir", str(shared_data / "eval"),
            "--limit", "2", "--methods", "budget_forcing,rs", "--budgets", "4,400", "--max-model-len", "512",
            "--max-tokens", "6", "--max-tries", "3", "--max-num-seqs", "4", "--no-progress", "--out", str(out)]
    with kernels.use_backend("torch"):
        assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("warning: thinking budget") == 1 and "warning: thinking budget 400 is more than" in err
    assert "2 question(s) did not fit within --max-tries 3 and count as wrong" in err
    tok = Tokenizer.from_pretrained(tiny_model_dir)
    end = len(tok.encode("<|im_start|>answer\nFinal Answer:"))
    items = load_task("aime24", data_dir=str(shared_data / "eval"), limit=2)
    want = [512 - len(tok.encode(tok.render_prompt(it.question))) - end - 100 for it in items]
    assert all(0 < w < 400 for w in want)
    recs = {(r["method"], r["max_thinking_tokens"], r["qid"]): r for r in map(json.loads, open(out / "samples.jsonl"))}
    for (method, budget, qid), r in recs.items():
        if budget == 4:
            assert "budget_clipped" not in r
        else:
            assert (r["budget_clipped"], r["context_thinking_limit"]) == (True, want[[i.id for i in items].index(qid)])
        if method == "rs":
            assert (r["attempts"], r["attempt_thinking_tokens"], r["rs_accepted"]) == (3, [min(budget, 6)] * 3, False)
    assert json.loads((out / "timing.json").read_text())["rejection_sampling_extra_rounds"] == 2
    summ = json.loads((out / "summary.json").read_text())
    bf4, bf400, rs4, rs400 = summ["points"]
    assert "clipped_runs" not in bf4 and (bf400["clipped_runs"], bf400["context_thinking_limit"]) == (2, max(want))
    assert rs400["clipped_runs"] == 2 and "clipped_runs" not in rs4
    md = (out / "summary.md").read_text()
    assert f"| budget_forcing | 400 (clipped: {max(want)}) |" in md and "Clipped budgets: budget_forcing/max=400" in md
    assert "| 4 | 3.0 | 3 | 2 | 0.0 | 0.0 |" in md and "| 400 | 3.0 | 3 | 2 | 0.0 | 0.0 |" in md
    assert point_tag(bf400) == "400*" and point_tag(bf4) == "4"
