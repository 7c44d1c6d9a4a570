"""`s1 train` through its CLI entry point (s1/train/cli.py): bad rows and flags are clear errors,
flags and defaults match the trainer's config, the dtype vocabulary."""
import pytest

from tests.train.helpers import TINY, digit_rows, write_json


def test_cli_errors(tmp_path, qwen_tokenizer_dir, capsys):
    from s1.train.cli import main
    rows = digit_rows(3)
    del rows[1]["attempt"]
    data = write_json(tmp_path / "bad.json", rows)
    cfgf = write_json(tmp_path / "cfg.json", TINY)
    rc = main(["--init-config", cfgf, "--tokenizer", str(qwen_tokenizer_dir), "--data", data,
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "row 1: missing column 'attempt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--init-config", cfgf, "--data", data, "--out", str(tmp_path / "o"), "--block-size", "0"])
    with pytest.raises(SystemExit):
        main(["--model", "m", "--init-config", cfgf, "--data", data, "--out", "o"])
    rc = main(["--init-config", cfgf, "--data", data, "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "--tokenizer" in capsys.readouterr().err


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


def test_pack_and_micro_batches_work_on_the_defaults_and_restart_flags(tmp_path, qwen_tokenizer_dir):
    """`s1 train --pack` and `--micro-batch-size 2` parse with the default (per-sequence) weighting;
    --resume / --resume auto / --overwrite map onto the config."""
    from s1.train.cli import parse_args
    cfgf = write_json(tmp_path / "cfg.json", TINY)
    base = ["--init-config", cfgf, "--tokenizer", str(qwen_tokenizer_dir), "--data", "d.json", "--out", "o"]
    assert parse_args(base + ["--pack"]).loss_weighting == "sequence"
    assert parse_args(base + ["--micro-batch-size", "2"]).micro_batch_size == 2
    assert parse_args(base).resume is False
    assert parse_args(base + ["--resume"]).resume is True
    assert parse_args(base + ["--resume", "auto"]).resume == "auto"
    assert parse_args(base + ["--overwrite"]).overwrite is True
    assert parse_args(base + ["--dist-timeout", "120"]).dist_timeout_s == 120.0
    with pytest.raises(SystemExit):
        parse_args(base + ["--resume", "auto", "--overwrite"])


def test_plan_32b_at_32k_lists_every_buffer_and_fits_80gb_only_with_checkpointing(capsys):
    from s1.train.cli import main
    assert main(["--plan", "32B", "--grad-ckpt", "--block-size", "32768"]) == 0
    out = capsys.readouterr().out
    for item in ("fp32 master weights", "AdamW moments", "lm_head gradient [V, H] from the fused CE",
                 "root unit unsharded", "fp32 reduce-scatter", "checkpointed layer inputs", "fits 79.6 GiB"):
        assert item in out, item
    assert main(["--plan", "32B", "--block-size", "32768"]) == 1  # no checkpointing: does not fit
    assert "does NOT fit" in capsys.readouterr().out
    from s1.model.config import shape_config
    from s1.train.plan import memory_plan
    items = {i.name: i.bytes / 2**30 for i in memory_plan(shape_config("32B"), 16, 32768)}
    assert abs(items["lm_head gradient [V, H] from the fused CE (bf16)"] - 152064 * 5120 * 2 / 2**30) < 1e-9
