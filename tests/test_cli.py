"""The `s1` command and `python -m <package>` entry points."""
import subprocess
import sys

import s1cli


def test_s1_help_lists_every_stage(capsys):
    assert s1cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("generate", "eval", "train", "curate", "bench", "demo"):
        assert cmd in out


def test_unknown_command_is_an_error(capsys):
    assert s1cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_stage_module_resolves():
    import importlib
    for cmd, (mod, fn, _) in s1cli.COMMANDS.items():
        assert callable(getattr(importlib.import_module(mod), fn)), cmd


def test_python_m_bench_lists_scripts():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True).stdout
    assert "load_memory" in out
