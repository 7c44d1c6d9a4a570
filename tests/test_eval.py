"""`s1 eval` (evaluation/evaluate.py, evaluation/tasks.py, evaluation/plots.py).

Two levels:
- a fake engine whose behaviour is known exactly (answers right iff the budget reaches a
  per-question need) -> the summary must equal hand-computed accuracies / Control / Scaling;
- the real engine on a tiny random-weight Qwen2 model with the real tokenizer, end to end through
  `main()` for every task format (aime24, aime25, math500, amc23, GPQA synthetic fixture), then
  `--rescore` must reproduce summary.json exactly.
"""
import dataclasses
import json
import math
import pathlib

import pytest

from evaluation import evaluate
from infer.sampling import SamplingParams
from evaluation.tasks import TaskError, TaskItem, choice_options, gpqa_item, load_task

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


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


class FakeLLM:
    """Question i needs `need[q]` thinking tokens; with a budget >= need it answers right, else 0.
    Without a cap it thinks `need` tokens (+100 per Wait). Records how often generate() is called."""

    def __init__(self, need: dict, answers: dict):
        self.need, self.answers, self.calls = need, answers, 0

    def generate(self, prompts, params):
        self.calls += 1
        outs = []
        for q, p in zip(prompts, params):
            assert isinstance(p, SamplingParams)
            want = self.need[q] + 100 * p.num_wait
            used = want if p.max_thinking_tokens is None else min(want, p.max_thinking_tokens)
            ans = self.answers[q] if used >= self.need[q] else "0"
            answer = f"Final Answer: $\\boxed{{{ans}}}$"
            outs.append(FakeOut(q, "t" * used, answer, "t" * used + "\n<|im_start|>answer\n" + answer,
                                [1] * (used + 5), used, p.num_wait, "stop"))
        return outs


def test_fake_engine_sweep_matches_hand_computation(tmp_path):
    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    need = {"q0": 100, "q1": 300, "q2": 600, "q3": 5000}
    llm = FakeLLM(need, {f"q{i}": str(10 + i) for i in range(4)})
    points = evaluate.make_points(["budget_forcing"], [128, 512, 1024], [0])
    summ = evaluate.run_eval(llm, items, points, out_dir=str(tmp_path), task="fake", model="fake",
                             sampling_params_cls=SamplingParams)
    assert llm.calls == 1  # every point in ONE batched engine call
    acc = [r["accuracy"] for r in summ["points"]]
    think = [r["mean_thinking_tokens"] for r in summ["points"]]
    assert acc == [25.0, 50.0, 75.0]
    assert think == [(100 + 128 * 3) / 4, (100 + 300 + 512 * 2) / 4, (100 + 300 + 600 + 1024) / 4]
    m = summ["methods"]["budget_forcing"]
    assert m["control"] == 1.0 and m["performance"] == 75.0
    c = list(zip(think, acc))
    slopes = [(fb - fa) / (math.log2(cb) - math.log2(ca)) for i, (ca, fa) in enumerate(c) for cb, fb in c[i + 1:]]
    assert m["scaling"] == pytest.approx(sum(slopes) / 3)
    for f in ("config.json", "samples.jsonl", "summary.json", "summary.md", "scaling.png", "timing.json"):
        assert (tmp_path / f).exists(), f
    rows = [json.loads(x) for x in open(tmp_path / "samples.jsonl")]
    assert len(rows) == 12 and {"qid", "point", "extracted", "correct", "thinking_tokens", "waits_used"} <= set(rows[0])
    # Re-scoring reproduces the summary byte for byte.
    before = (tmp_path / "summary.json").read_text()
    evaluate.rescore(str(tmp_path), str(tmp_path / "re"))
    assert (tmp_path / "re" / "summary.json").read_text() == before
    assert (tmp_path / "re" / "summary.md").read_text() == (tmp_path / "summary.md").read_text()


def test_fake_engine_waits_and_majority(tmp_path):
    items = [TaskItem("a", "qa", "7", "math"), TaskItem("b", "qb", "8", "math")]
    llm = FakeLLM({"qa": 50, "qb": 250}, {"qa": "7", "qb": "8"})
    points = evaluate.make_points(["budget_forcing"], [None], [0, 2])
    summ = evaluate.run_eval(llm, items, points, samples=2, temperature=1.0, out_dir=str(tmp_path),
                             task="fake", model="fake", sampling_params_cls=SamplingParams)
    rows = summ["points"]
    assert [r["num_wait"] for r in rows] == [0, 2]
    assert [r["mean_thinking_tokens"] for r in rows] == [150.0, 350.0]
    assert [r["mean_waits_used"] for r in rows] == [0.0, 2.0]
    assert summ["methods"]["budget_forcing"]["control"] is None  # no limits -> nothing to control
    maj = summ["majority"]["budget_forcing/max=none/wait=0"]["curve"]
    assert [c["k"] for c in maj] == [1, 2] and [c["compute"] for c in maj] == [150.0, 300.0]
    assert [c["accuracy"] for c in maj] == [100.0, 100.0]


def test_request_seeds_are_stable_and_distinct():
    s = {evaluate.request_seed(0, q, "p", k) for q in "abc" for k in range(4)}
    assert len(s) == 12
    assert evaluate.request_seed(0, "a", "p", 0) == evaluate.request_seed(0, "a", "p", 0)


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
    assert evaluate.main(["--rescore", str(tmp_path)]) == 2
    assert "missing config.json" in capsys.readouterr().err
    assert evaluate.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                          "--budgets", "12x"]) == 2
    assert "not an integer" in capsys.readouterr().err
    assert evaluate.main(["--model", str(tmp_path), "--task", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Real engine, tiny random model, every task format through the CLI
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch

    from model.config import Qwen2Config
    from model.loading import save_model
    from model.qwen2 import Qwen2ForCausalLM
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
    import kernels

    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--task", task, "--budgets", "4,12", "--num-wait", "0,1",
            "--limit", "2", "--max-answer-tokens", "6", "--out", str(out)]
    argv += (["--data-file", str(FIXTURES / "gpqa_synthetic.jsonl")] if task == "gpqa_diamond"
             else ["--data-dir", str(shared_data / "eval")])
    with kernels.use_backend("torch"):
        assert evaluate.main(argv) == 0
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
    assert evaluate.main(["--rescore", str(out), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "summary.json").read_text() == (out / "summary.json").read_text()


def test_bench_eval_sweep_smoke(shared_data, capsys):
    """The GPU benchmark script's CPU smoke mode runs (tiny model, 4 MATH-500 questions)."""
    import kernels
    from bench import eval_sweep

    with kernels.use_backend("torch"):
        assert eval_sweep.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["requests"] == 8 and result["mean_thinking_tokens"] == [8.0, 16.0]
    assert 0 <= result["harness_fraction"] < 1


def test_default_eval_dir_follows_s1_shared_data(monkeypatch, tmp_path):
    """S1_SHARED_DATA (README, tests) also moves the eval sets; S1_EVAL_DATA wins over it."""
    from evaluation.tasks import default_data_dir
    monkeypatch.delenv("S1_EVAL_DATA", raising=False)
    monkeypatch.setenv("S1_SHARED_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path / "eval"
    monkeypatch.setenv("S1_EVAL_DATA", str(tmp_path / "e"))
    assert default_data_dir() == tmp_path / "e"
