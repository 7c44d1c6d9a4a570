"""`s1 eval` through its CLI entry point (s1/evaluation/cli.py): errors, defaults that are s1's
command lines, every flag documented, a fast --help without torch, a non-empty --out refused
before anything loads."""
import argparse
import pathlib
import subprocess
import sys
import time

import pytest

from s1.evaluation import cli, sweep
from tests.helpers import assert_imports_without_torch

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[2]


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
    assert (a.max_tries, a.rs_temperature, a.majority_k, a.majority_budget, a.no_think) == \
        (None, 1.0, 64, "auto", False)
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
    assert_imports_without_torch(["s1.evaluation.cli", "s1.evaluation.sweep", "s1.evaluation.report"],
                                 then="s1.evaluation.cli.build_parser().format_help()")
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


def test_thinking_format_and_scc_style_flags(tmp_path, capsys, qwen_tokenizer_dir):
    """--scc-style s1 runs scc alone with budgets in steps; a stop that is more than two tokens and
    --thinking-format think on a tokenizer without <think> exit 2 before any model loads."""
    import shutil
    base = ["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"), "--limit", "1"]
    assert cli.main(base + ["--methods", "scc,budget_forcing", "--scc-style", "s1", "--budgets", "16"]) == 2
    assert "--scc-style s1 runs --methods scc alone" in capsys.readouterr().err
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(qwen_tokenizer_dir / name, tmp_path / name)
    assert cli.main(base + ["--thinking-format", "think", "--budgets", "100"]) == 2
    assert "'</think>' is" in capsys.readouterr().err          # not one token of this tokenizer
    assert cli.main(base + ["--thinking-stops", "<|im_start|>answer\\n", "--budgets", "100",
                            "--out", str(tmp_path / "o2")]) == 2
    assert "one or two are supported" in capsys.readouterr().err
    # s1's step-conditional format is accepted (the missing config.json / weights fail later, at load)
    a = cli.build_parser().parse_args(base + ["--methods", "scc", "--scc-style", "s1", "--budgets", "16,32"])
    tok = cli.load_tokenizer(str(tmp_path), a)
    assert tok.thinking_format.start == "<|im_start|>" and tok.thinking_format.stops[0] == "<|im_start|>0"
