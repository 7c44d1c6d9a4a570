"""Evaluation tasks (s1/evaluation/tasks.py): every local format loads, the GPQA shuffle, clear
errors, the default data folder."""
import json
import pathlib

import pytest

from s1.evaluation.tasks import TaskError, choice_options, gpqa_item, load_task

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"


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


def test_default_eval_dir_follows_s1_shared_data(monkeypatch, tmp_path):
    """S1_SHARED_DATA (README, tests) also moves the eval sets; S1_EVAL_DATA wins over it."""
    from s1.evaluation.tasks import default_data_dir
    monkeypatch.delenv("S1_EVAL_DATA", raising=False)
    monkeypatch.setenv("S1_SHARED_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path / "eval"
    monkeypatch.setenv("S1_EVAL_DATA", str(tmp_path / "e"))
    assert default_data_dir() == tmp_path / "e"
