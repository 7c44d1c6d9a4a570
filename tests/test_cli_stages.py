"""`s1 curate` and `s1 train` as a new user meets them: what is missing is said up front,
a model-free curation runs as the README writes it, an empty result is a clear message, flags and
defaults match the trainer's config."""
import json
import time

import pytest

from tests.conftest import ROOT

POOL = str(ROOT / "tests" / "fixtures" / "curate" / "pool")
MATH_TEST = str(ROOT / "tests" / "fixtures" / "curate" / "pool" / "math_test")


def test_curate_without_traces_says_what_is_missing_before_any_stage(tmp_path, capsys):
    from s1.curate.cli import main
    t0 = time.perf_counter()
    assert main(["--pool", POOL, "--out", str(tmp_path / "run"), "--size", "3", "--no-progress"]) == 1
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    for option in ("--teacher CKPT", "--traces FILE", "--traces pool-solutions"):
        assert option in err, err
    assert not (tmp_path / "run" / "stages").exists()        # no stage ran


def test_curate_model_free_with_pool_solutions(tmp_path, shared_data):
    from s1.common.jsonl import read_jsonl
    from s1.curate.cli import main
    out = tmp_path / "run"
    assert main(["--pool", POOL, "--out", str(out), "--size", "3", "--traces", "pool-solutions", "--no-progress"]) == 0
    rows = read_jsonl(out / "s1k.jsonl")
    assert len(rows) == 3
    for r in rows:   # the reference solution (or, without one, the answer) stands in for the trace
        assert r["thinking_trajectories"][0] in (r["solution"], f"The answer is {r['answer']}.")
        assert r["attempt"] == "\\boxed{%s}" % r["answer"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["traces"] == ["pool-solutions"]
    assert main(["--out", str(out), "--no-progress"]) == 0   # settings come back from config.json, all up to date


def test_curate_nothing_survives_is_a_clear_message(tmp_path, capsys):
    """Every question is in the evaluation set: decontamination removes all of them. The run stops
    there with a message naming the stage (it used to end in datasets' "Keys mismatch")."""
    from s1.curate.cli import main
    args = ["--pool", MATH_TEST, "--eval", MATH_TEST, "--out", str(tmp_path / "run"), "--size", "3",
            "--traces", "pool-solutions", "--no-progress"]
    for _ in range(2):                                        # the rerun says the same
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "no question survives the decontam stage" in err and "Keys mismatch" not in err, err
    assert not (tmp_path / "run" / "dataset").exists()


def test_curate_teacher_as_hub_id_not_cached(tmp_path, monkeypatch, capsys):
    from s1.curate.cli import main
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["--pool", POOL, "--out", str(tmp_path / "run"), "--teacher", "Qwen/Qwen2.5-32B-Instruct"]) == 2
    assert "hf download Qwen/Qwen2.5-32B-Instruct" in capsys.readouterr().err


# ----------------------------------------------------------------------------- train
def test_train_cli_defaults_are_the_trainer_defaults():
    """Each flag with a default states the TrainConfig default (so --help tells the truth)."""
    import dataclasses

    from s1.train.cli import build_parser
    from s1.train.loop import TrainConfig
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    p = build_parser()
    checked = 0
    for a in p._actions:
        if a.dest in fields and a.default is not None and a.option_strings and not a.required:
            want = fields[a.dest]
            got = tuple(a.default) if isinstance(a.default, (list, tuple)) else a.default
            if isinstance(a.default, bool):   # store_true flags: the config field is the opposite or the same
                continue
            assert got == want, f"--{a.dest.replace('_', '-')}: CLI default {got!r}, TrainConfig {want!r}"
            checked += 1
    assert checked >= 10


def test_train_dtype_vocabulary_and_flag_errors(tmp_path, capsys):
    from s1.train.cli import build_parser, main
    p = build_parser()
    base = ["--init-config", "c.json", "--data", "d", "--out", "o"]
    assert p.parse_args(base + ["--dtype", "bf16"]).dtype == "bfloat16"
    assert p.parse_args(base + ["--export-dtype", "fp16"]).export_dtype == "float16"
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--export-dtype", "auto"])
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    assert main(["--init-config", str(cfg), "--tokenizer", str(tmp_path), "--data", "d", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--tokenizer" in err and "tokenizer.json" in err
