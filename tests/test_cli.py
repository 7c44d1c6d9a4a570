"""The `s1` command and `python -m <package>` entry points: usage, --version, fast help, and every
flag of every subcommand documented."""
import argparse
import importlib
import subprocess
import sys
import time

import pytest

from s1 import cli as s1cli
from tests.conftest import ROOT


def test_s1_help_lists_every_stage(capsys):
    assert s1cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("generate", "eval", "train", "curate", "bench", "demo"):
        assert cmd in out
    assert "--version" in out and "S1_THREADS" in out


def test_version(capsys):
    for flag in ("--version", "-V"):
        assert s1cli.main([flag]) == 0
        assert capsys.readouterr().out.startswith(f"s1 {s1cli.__version__} ")
    r = subprocess.run([sys.executable, "-c", "import setuptools, runpy, sys; sys.argv = ['setup.py', '--version']; "
                        "runpy.run_path('setup.py')"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode == 0:   # one version: setup.py reads s1.__version__
        assert r.stdout.strip().splitlines()[-1] == s1cli.__version__


def test_unknown_command_is_an_error(capsys):
    assert s1cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_stage_module_resolves():
    for cmd, (_, fn, _) in s1cli.COMMANDS.items():
        mod = importlib.import_module(s1cli.command_module(cmd))
        assert callable(getattr(mod, fn)), cmd
        assert callable(getattr(mod, "build_parser", None)), f"{cmd}: no build_parser() next to {fn}"


def test_python_m_bench_lists_scripts():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True).stdout
    assert "load_memory" in out and "busy" in out


# ----------------------------------------------------------------------------- every parser
def parsers():
    """(command, parser) for every parser reachable from every subcommand, sub-parsers included."""
    out = []
    for cmd in s1cli.COMMANDS:
        p = importlib.import_module(s1cli.command_module(cmd)).build_parser()
        stack = [(cmd, p)]
        while stack:
            name, q = stack.pop()
            out.append((name, q))
            for a in q._actions:
                if isinstance(a, argparse._SubParsersAction):
                    stack += [(f"{name} {k}", v) for k, v in a.choices.items()]
    return out


def undocumented() -> list[str]:
    bad = []
    for name, p in parsers():
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if a.help is argparse.SUPPRESS:
                continue            # hidden on purpose (internal flags of a command)
            if not (a.help or "").strip():
                bad.append(f"s1 {name}: {'/'.join(a.option_strings) or a.dest}")
    return bad


def test_every_argument_of_every_command_has_help():
    """Walks the parsers of generate, eval, train, curate, bench and demo (through s1cli.COMMANDS)."""
    assert {name.split()[0] for name, _ in parsers()} == set(s1cli.COMMANDS)
    bad = undocumented()
    assert not bad, "arguments without help text:\n  " + "\n  ".join(bad)


def test_the_walk_catches_an_undocumented_argument(monkeypatch):
    import s1.infer.cli
    real = s1.infer.cli.build_parser

    def planted():
        p = real()
        p.add_argument("--undocumented-flag")
        return p
    monkeypatch.setattr(s1.infer.cli, "build_parser", planted)
    assert "s1 generate: --undocumented-flag" in undocumented()


@pytest.mark.parametrize("cmd", list(s1cli.COMMANDS))
def test_command_help_is_fast_and_imports_no_torch(cmd):
    """`s1 <cmd> --help` answers without importing torch (it took 5-6 s with torch first)."""
    code = (f"import sys, time, contextlib, io; from s1 import cli as s1cli; t = time.perf_counter(); buf = io.StringIO()\n"
            f"try:\n    with contextlib.redirect_stdout(buf): rc = s1cli.main([{cmd!r}, '--help'])\n"
            f"except SystemExit as e:\n    rc = e.code\n"
            f"print(rc, round(time.perf_counter() - t, 3), 'torch' in sys.modules, len(buf.getvalue()))")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    rc, dt, torch_loaded, n = r.stdout.split()
    assert rc in ("0", "None") and int(n) > 200, r.stdout + r.stderr
    assert torch_loaded == "False", f"s1 {cmd} --help imported torch"
    assert float(dt) < 2.0 and wall < 20, (dt, wall)


def test_python_m_entry_points_answer_help():
    for pkg in ("s1", "s1.infer", "s1.train", "s1.curate", "s1.evaluation", "s1.serve", "s1.pipelines"):
        r = subprocess.run([sys.executable, "-m", pkg, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout, (pkg, r.stderr)
