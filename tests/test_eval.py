"""`s1 eval` (s1/evaluation/sweep.py, s1/evaluation/report.py, s1/evaluation/cli.py, s1/evaluation/tasks.py,
s1/evaluation/plots.py).

Two levels:
- a fake engine whose behaviour is known exactly (answers right iff the budget reaches a
  per-question need) -> the summary must equal hand-computed accuracies / Control / Scaling;
- the real engine on a tiny random-weight Qwen2 model with the real tokenizer, end to end through
  `main()` for every task format (aime24, aime25, math500, amc23, GPQA synthetic fixture), then
  `--rescore` must reproduce summary.json exactly; an interrupted run (SIGINT) keeps its finished
  records and `--resume` completes it with the summary of an uninterrupted run.
"""
import argparse
import dataclasses
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
from s1.evaluation.tasks import TaskError, TaskItem, choice_options, gpqa_item, load_task
from s1.infer.sampling import SamplingParams

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class FakeOut:
    prompt: str
    thinking: str
    answer: str
    text: str
    output_token_ids: list
    num_thinking_tokens: int
    num_waits_used: int
    finish_reason: str
    max_thinking_tokens: int | None = None


class FakeLLM:
    """Question i needs `need[q]` thinking tokens; with a budget >= need it answers right, else 0.
    Without a cap it thinks `need` tokens (+100 per Wait); "auto" resolves to AUTO_CAP. Reports
    outputs through on_output in reverse order (completion order differs from prompt order) and
    records how often generate() is called."""

    AUTO_CAP = 1000

    def __init__(self, need: dict, answers: dict):
        self.need, self.answers, self.calls = need, answers, 0

    def generate(self, prompts, params, use_tqdm=True, on_output=None):
        self.calls += 1
        outs = []
        for q, p in zip(prompts, params):
            assert isinstance(p, SamplingParams)
            cap = self.AUTO_CAP if p.max_thinking_tokens == "auto" else p.max_thinking_tokens
            want = self.need[q] + 100 * p.num_wait
            used = want if cap is None else min(want, cap)
            ans = self.answers[q] if used >= self.need[q] else "0"
            answer = f"Final Answer: $\\boxed{{{ans}}}$"
            outs.append(FakeOut(q, "t" * used, answer, "t" * used + "\n<|im_start|>answer\n" + answer,
                                [1] * (used + 5), used, p.num_wait, "stop", cap))
        if on_output is not None:
            for i in reversed(range(len(outs))):
                on_output(i, outs[i])
        return outs


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


def test_tasks_load_every_local_format(shared_data):
    d = shared_data / "eval"
    expect = {"aime24": (30, "integer"), "aime25": (30, "integer"), "math500": (500, "math"), "amc23": (40, "math")}
    for name, (n, kind) in expect.items():
        items = load_task(name, data_dir=d)
        assert len(items) == n and {i.kind for i in items} == {kind}
    amc = load_task("amc23", data_dir=d, limit=3)
    assert [i.answer for i in amc] == ["27", "36", "45"]  # floats 27.0 -> "27"
    assert load_task("aime24", data_dir=d)[7].answer == "025"  # graded as integers: "25" is right


def test_gpqa_fixture_shuffle_is_seeded_and_correct_letter_points_to_the_right_option():
    items = load_task("gpqa_diamond", data_file=FIXTURES / "gpqa_synthetic.jsonl")
    rows = [json.loads(x) for x in open(FIXTURES / "gpqa_synthetic.jsonl")]
    assert len(items) == len(rows) >= 6
    letters = set()
    for it, row in zip(items, rows):
        lines = it.question.split("\n")
        assert it.question.startswith(row["Question"] + "\n\nA) ")
        options = {ln[0]: ln[3:] for ln in lines[-4:]}
        assert list(options) == ["A", "B", "C", "D"]
        assert options[it.answer] == row["Correct Answer"]
        assert sorted(options.values()) == sorted([row["Correct Answer"]] + [row[f"Incorrect Answer {k}"] for k in (1, 2, 3)])
        letters.add(it.answer)
        assert choice_options(it.question) == [options[k] for k in "ABCD"]
    assert len(letters) > 1  # shuffled, not always "A"
    again = load_task("gpqa_diamond", data_file=FIXTURES / "gpqa_synthetic.jsonl", limit=2)
    assert again == items[:2]  # per-question seeding: --limit does not change the order
    other = [gpqa_item(r, i, seed=1) for i, r in enumerate(rows)]
    assert [o.answer for o in other] != [i.answer for i in items]


def test_task_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(TaskError, match="unknown task"):
        load_task("aime99")
    with pytest.raises(TaskError, match="does not exist"):
        load_task("aime24", data_dir=tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"Question": "x", "Correct Answer": "y"}\n')
    with pytest.raises(TaskError, match="Incorrect Answer 1"):
        load_task("gpqa_diamond", data_file=bad)
    import datasets

    def boom(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(TaskError, match="gated"):
        load_task("gpqa_diamond")


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["--rescore", str(tmp_path)]) == 2
    assert "missing config.json" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                     "--budgets", "12x"]) == 2
    assert "--budgets: '12x' is not an integer" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path), "--task", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task" in capsys.readouterr().err
    for flag, value, want in (("--top-p", "1.5", "--top-p must be in (0, 1], got 1.5"),
                              ("--temperature", "-1", "--temperature must be >= 0"),
                              ("--max-answer-tokens", "0", "--max-answer-tokens must be >= 1"),
                              ("--gpu-memory-utilization", "1.5", "--gpu-memory-utilization must be in (0, 1]")):
        assert cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                         flag, value]) == 2
        assert want in capsys.readouterr().err, flag
    assert cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                     "--budgets", "100,500", "--min-thinking-tokens", "200"]) == 2
    assert "--min-thinking-tokens 200 exceeds --budgets value 100" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # one dtype vocabulary: choices of s1/common/dtypes.py
        cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"), "--dtype", "f64"])


def test_cli_defaults_are_s1s_command_lines():
    """s1's evaluation: budgets 500..16000 plus auto, greedy, float32, "Wait", no waits, and no cap on
    the answer (only the context limits it)."""
    a = cli.build_parser().parse_args([])
    assert sweep.parse_budgets(a.budgets) == [500, 1000, 2000, 4000, 8000, 16000, "auto"]
    assert (a.temperature, a.dtype, a.extension, a.num_wait, a.max_answer_tokens, a.max_tokens) == \
        (0.0, "float32", "Wait", "0", None, None)
    assert (a.rs_max_attempts, a.rs_temperature, a.majority_k, a.majority_budget) == (64, 1.0, 64, "auto")
    assert cli.build_parser().parse_args(["--dtype", "bf16"]).dtype == "bfloat16"


def test_every_eval_flag_has_help_and_the_help_shows_defaults(capsys):
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), action.option_strings
    text = " ".join(parser.format_help().split())
    assert "(default: 500,1000,2000,4000,8000,16000,auto)" in text and "(default: float32)" in text
    assert "--gpu-memory-utilization" in text and "--gpu-memory-fraction" not in text
    for flag in ("--system-prompt", "--threads", "--resume", "--overwrite", "--extension"):
        assert flag in text
    assert "issue" not in text.lower() and "shared/docs" not in text


def test_eval_help_and_sweep_modules_import_without_torch():
    """`s1 eval --help`, the sweep definition and the reports need no torch (fast CLI, rescoring)."""
    code = ("import sys; import s1.evaluation.cli, s1.evaluation.sweep, s1.evaluation.report; "
            "s1.evaluation.cli.build_parser().format_help(); "
            "bad = [m for m in ('torch', 's1.infer.llm') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "s1.evaluation", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--resume" in r.stdout


def test_eval_refuses_a_non_empty_folder_before_loading_the_model(tmp_path, capsys):
    """An earlier run's folder: without --resume or --overwrite the command refuses, naming both
    flags, and loads nothing (the model folder here is not even a checkpoint)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"qid": "x"}\n')
    model = tmp_path / "not_a_model"
    model.mkdir()
    argv = ["--model", str(model), "--task", "gpqa_diamond", "--data-file", str(FIXTURES / "gpqa_synthetic.jsonl"),
            "--out", str(out)]
    t0 = time.perf_counter()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and str(out) in err
    assert time.perf_counter() - t0 < 10
    assert (out / "samples.jsonl").read_text() == '{"qid": "x"}\n'   # untouched
    assert cli.main(argv + ["--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(argv[:-1] + [str(blocker / "sub")]) == 2
    assert "cannot be written" in capsys.readouterr().err


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


def test_scaling_plot_is_readable(tmp_path):
    """Budget 0 is not drawn at x = 2^0: the axis is linear from 0 to the smallest positive value
    (0 sits left of it); no two point labels overlap; the caption says what the small numbers are;
    the x label names only what is plotted."""
    from s1.evaluation.plots import draw_scaling

    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    llm = FakeLLM({"q0": 1, "q1": 2, "q2": 3, "q3": 4}, {f"q{i}": str(10 + i) for i in range(4)})
    points = sweep.make_points(["budget_forcing"], [0, 1, 2, 3, 4, 6, 8], [0])
    summ = sweep.run_eval(llm, items, points, task="fake", model="fake", sampling_params_cls=SamplingParams,
                          out_dir=str(tmp_path))
    assert summ["points"][0]["compute"] == 0.0
    fig, ax, labels = draw_scaling(summ)
    assert ax.get_xscale() == "symlog"
    x0 = ax.transData.transform((0.0, 0.0))[0]
    x1 = ax.transData.transform((1.0, 0.0))[0]
    assert x0 < x1 - 10   # 0 is drawn left of 1, not on top of it
    assert "majority" not in ax.get_xlabel() and "rs" not in ax.get_xlabel()
    assert "thinking tokens" in ax.get_xlabel()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in labels]
    assert len(boxes) == 7
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "cap on thinking tokens" in caption
    assert (tmp_path / "scaling.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------
# Real engine, tiny random model, every task format through the CLI
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch

    from s1.model.config import Qwen2Config
    from s1.model.loading import save_model
    from s1.model.qwen2 import Qwen2ForCausalLM
    from tests.conftest import require_shared_data

    tok_dir = require_shared_data() / "qwen2.5-tokenizer"
    cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, torch_dtype="float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    d = tmp_path_factory.mktemp("tiny_eval_model")
    save_model(model, d, tokenizer_dir=tok_dir)
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


def test_bench_eval_sweep_smoke(shared_data, capsys):
    """The GPU benchmark script's CPU smoke mode runs (tiny model, 4 MATH-500 questions)."""
    from s1 import kernels
    from bench import eval_sweep

    with kernels.use_backend("torch"):
        assert eval_sweep.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["requests"] == 8 and result["mean_thinking_tokens"] == [8.0, 16.0]
    assert 0 <= result["harness_fraction"] < 1


def test_default_eval_dir_follows_s1_shared_data(monkeypatch, tmp_path):
    """S1_SHARED_DATA (README, tests) also moves the eval sets; S1_EVAL_DATA wins over it."""
    from s1.evaluation.tasks import default_data_dir
    monkeypatch.delenv("S1_EVAL_DATA", raising=False)
    monkeypatch.setenv("S1_SHARED_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path / "eval"
    monkeypatch.setenv("S1_EVAL_DATA", str(tmp_path / "e"))
    assert default_data_dir() == tmp_path / "e"
