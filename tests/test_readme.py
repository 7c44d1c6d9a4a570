"""Every command line in README.md is executed here, by another named test, or by .ci/run, or its
README section says it needs a GPU or a download: the README cannot drift from the code.

Commands are the lines of ```bash blocks (continuations joined, `&&` split) and every inline code
span whose first word is a program (s1, python, torchrun, pip, hf). Each must match
exactly one rule of RULES:
  run        executed in-process with small arguments appended or substituted (placeholders such
             as DIR, N, K, "..." get real values; a tiny random-weight checkpoint stands in for DIR);
  help       `--help` of a long benchmark or of the server: it runs, and every flag the README
             uses is listed;
  ci         .ci/run runs it (checked in its text);
  test       another test runs it (the named test must exist);
  needs      not run: its README section must say why ("GPU" or "download");
  reference  a bare command name in prose; fragment: contains "...": its flags must exist.
Every `s1 ...`, `python -m s1.train|infer|curate|evaluation|pipelines.demo ...` and the part after
`torchrun ... -m s1.train` is also parsed by that command's own parser, so a renamed or removed flag
fails here even for the commands that are not run.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from s1 import cli as s1cli
from tests.conftest import ROOT, require_shared_data

README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
PROGRAMS = ("s1", "python", "torchrun", "pip", "hf")

RULES = [   # (regex on the command, action, detail); first match wins
    (r"pip install torch==2\.13\.0", "ci", "pip install torch==2.13.0"),
    (r"pip install -e \.", "ci", 'pip install -e ".[test]"'),            # .ci/run installs the superset
    (r'pip install -e "\.\[test\]"', "ci", 'pip install -e ".[test]"'),
    (r"pip install openai", "ci", 'pip install -e ".[test]"'),            # the test extra brings openai
    (r"TRITON_INTERPRET=1 python -m pytest -q tests", "ci", "TRITON_INTERPRET=1 python -m pytest -q tests"),
    (r"hf download .+", "needs", "download"),                            # huggingface_hub's CLI (1.x: no huggingface-cli)
    (r"hf auth login", "needs", "download"),
    (r"torchrun .+", "needs", "GPU"),
    (r"s1 \w+ --model [A-Za-z0-9][\w.-]*/[\w.-]+( .*)?", "needs", "download"),  # a Hub id: download first
    (r'pip install -e "\.\[serve\]"', "ci", 'pip install -e ".[serve]"'),
    (r"s1 serve( .+)?", "help", None),                                  # a server: its --help, flags parsed
    (r"s1 demo( --quick)?", "test", "tests/pipelines/test_demo.py::test_demo_quick_run_accuracy_rises_with_thinking_budget"),
    (r"S1_THREADS=\d+ s1 demo", "test", "tests/common/test_threads.py::test_s1_demo_applies_the_policy_before_running"),
    (r"s1 COMMAND --help", "test", "tests/test_cli.py::test_command_help_is_fast_and_imports_no_torch"),
    (r".* \.\.\.", "fragment", None),                                   # "s1 eval --methods ..."
    (r"python -m bench\.busy -- s1 demo( --quick)?", "help", None),
    (r"python -m bench\.serve --url .+", "help", None),                  # needs a running server: --help, flags listed
    (r"python -m bench\.\w+( --?[\w-]+)*", "help", None),
    (r"python -m bench\.decode --preset [\w.]+", "help", None),               # --preset qwen3
    (r"python -m bench\.gpu --deadline \d+", "help", None),                # the GPU suite: its --help
    (r"s1 curate .*hf:simplescaling/.+", "needs", "download"),          # s1's 59K pool from the Hub
    (r"s1 curate variants --data simplescaling/.+", "needs", "download"),

    (r"s1 (generate|eval|train) .*--profile .+", "test",                  # writes traces: run by its own test
     "tests/common/test_profiling.py::test_generate_trace_has_the_engine_phases_in_the_step_window_and_the_timeline_plots"),
    (r"s1 bench timeline \S+", "test",
     "tests/common/test_profiling.py::test_generate_trace_has_the_engine_phases_in_the_step_window_and_the_timeline_plots"),
    (r"s1 (generate|eval|train|curate) .+", "run", None),
    (r"s1 bench NAME", "run", None),
    (r"s1 --version", "run", None),
    (r"s1 (generate|eval|train|curate|bench|demo|serve)", "reference", None),
    (r"s1", "reference", None),                                         # the command / the import name
    (r"python -m s1(\.<package>)?", "reference", None),
]
PACKAGE_COMMAND = {"s1.infer": "generate", "s1.train": "train", "s1.curate": "curate", "s1.evaluation": "eval",
                   "s1.pipelines": "demo", "s1.pipelines.demo": "demo", "s1.serve": "serve", "bench": "bench"}


# ----------------------------------------------------------------------------- extraction
def readme_sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of every section (a heading line and the text up to the next one)."""
    parts = re.split(r"(?m)^(#{1,6} .*)$", text)
    out = [("", parts[0])]
    out += [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]
    return out


def _program_command(span: str) -> str | None:
    words = span.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return span.strip() if words and words[0] in PROGRAMS else None


def readme_commands(text: str | None = None) -> list[tuple[str, str]]:
    """(section heading, command) for every command line of the README, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found = []
    for heading, body in readme_sections(text):
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", body, flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split(" #", 1)[0].strip()
                for part in line.split("&&"):
                    if _program_command(part.strip()):
                        found.append((heading, " ".join(part.split())))
        prose = re.sub(r"```.*?```", "", body, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if _program_command(span):
                found.append((heading, " ".join(span.split())))
    return found


def rule_of(cmd: str):
    for pattern, action, detail in RULES:
        if re.fullmatch(pattern, cmd):
            return action, detail
    return None, None


def section_text(heading: str) -> str:
    return dict(readme_sections(README.read_text(encoding="utf-8")))[heading]


# ----------------------------------------------------------------------------- parsing
PLACEHOLDERS = {"DIR": "d", "PATH": "p", "N": "8", "K": "1", "FILE": "f.jsonl", "NAME": "curate", "CKPT": "c"}


def command_and_args(cmd: str) -> tuple[str | None, list[str]]:
    """-> (s1 subcommand, its arguments) for s1 / python -m / torchrun ... -m s1.train commands."""
    words = shlex.split(cmd)
    if words[0] == "s1" and len(words) > 1 and words[1] in s1cli.COMMANDS:
        return words[1], words[2:]
    if words[0] in ("python", "torchrun") and "-m" in words:
        i = words.index("-m")
        return PACKAGE_COMMAND.get(words[i + 1]), words[i + 2:]
    return None, []


def parse_with_command_parser(cmd: str) -> None:
    """Parse the README's arguments with the command's own parser (placeholders filled)."""
    sub, args = command_and_args(cmd)
    if sub is None or sub == "bench" or "..." in args or not args:   # bare names are references
        return
    args = [PLACEHOLDERS.get(a, a) for a in args]
    module = s1cli.command_module(sub)
    if sub == "curate" and args and args[0] == "variants":      # its own parser
        module, args = "s1.curate.variants", args[1:]
    elif sub == "curate" and args and not args[0].startswith("-"):
        args = args[1:]                                          # a stage name
    parser = importlib.import_module(module).build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"README command `{cmd}`: `s1 {sub}` rejects its arguments: {err.getvalue().strip()}")


def known_flags(sub: str) -> set[str]:
    parser = importlib.import_module(s1cli.command_module(sub)).build_parser()
    return {o for a in parser._actions for o in a.option_strings}


# ----------------------------------------------------------------------------- the tests
def test_every_readme_command_has_a_rule_and_parses():
    cmds = readme_commands()
    assert len(cmds) >= 15, cmds                      # the extraction sees the README's commands
    unmatched = [c for _, c in cmds if rule_of(c)[0] is None]
    assert not unmatched, ("README commands that nothing checks (add a rule in tests/test_readme.py, "
                           "run them there, or say in their section that they need a GPU / a download):\n  "
                           + "\n  ".join(unmatched))
    for _, cmd in cmds:
        action, _ = rule_of(cmd)
        if action == "fragment":
            sub, args = command_and_args(cmd.replace("...", "").strip())
            if sub:
                missing = [a for a in args if a.startswith("--") and a not in known_flags(sub)]
                assert not missing, f"README `{cmd}`: unknown flags {missing}"
        elif action != "reference":
            parse_with_command_parser(cmd)


def test_every_rule_is_used():
    """No stale rule: each one matches some README command (so the list tracks the README)."""
    used = {rule_of(c)[0:2] for _, c in readme_commands()}
    cmds = [c for _, c in readme_commands()]
    stale = [p for p, _, _ in RULES if not any(re.fullmatch(p, c) for c in cmds)]
    assert not stale, f"rules matching no README command: {stale}"
    assert used


def test_commands_not_run_are_marked_in_their_section():
    for heading, cmd in readme_commands():
        action, why = rule_of(cmd)
        if action == "needs":
            assert why.lower() in section_text(heading).lower(), \
                f"README `{cmd}` is not run by the tests, but its section ({heading!r}) does not say it needs a {why}"


def test_ci_runs_the_install_and_test_commands():
    ci = CI.read_text()
    norm = " ".join(ci.replace("$PY -m pip", "pip").replace("$PY", "python").split()).replace("pip install -q ", "pip install ")
    for _, cmd in readme_commands():
        action, what = rule_of(cmd)
        if action == "ci":
            assert what in norm, f".ci/run does not run `{what}` (README: `{cmd}`)"
    assert '"$S1" --version' in ci       # the installed console script answers


def test_commands_run_by_other_tests_exist():
    for _, cmd in readme_commands():
        action, where = rule_of(cmd)
        if action == "test":
            path, name = where.split("::")
            assert re.search(rf"(?m)^def {re.escape(name)}\(", (ROOT / path).read_text()), where


def test_benchmark_commands_answer_help(capsys):
    """Long measurement scripts: `--help` runs, and lists each flag the README uses."""
    for _, cmd in readme_commands():
        if rule_of(cmd)[0] != "help":
            continue
        words = shlex.split(cmd)
        if words[0] == "s1":                      # `s1 serve ...`
            flags = words[2:]
            main = lambda argv: s1cli.main([words[1], *argv])   # noqa: E731
        else:                                     # `python -m bench.NAME ...`
            flags = words[3:]
            main = importlib.import_module(words[2]).main
        flags = flags[:flags.index("--")] if "--" in flags else flags
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        assert e.value.code in (0, None), cmd
        out = capsys.readouterr().out
        assert "usage" in out.lower(), cmd
        for f in flags:
            if f.startswith("-"):
                assert f in out, f"README `{cmd}`: {mod} --help does not list {f}"


# ----------------------------------------------------------------------------- run
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    d = tmp_path_factory.mktemp("readme_ckpt")
    return make_tiny_checkpoint(d, require_shared_data() / "qwen2.5-tokenizer", max_positions=4096)


def small_args(sub: str, args: list[str], tiny: str, tmp: Path) -> list[str]:
    """The README's arguments with real values and small sizes (appended flags win in argparse)."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if nxt in ("DIR", "PATH") and a == "--model":
            out += [a, tiny]
        elif nxt == "DIR" and a == "--out":
            out += [a, str(tmp / f"{sub}_out")]
        elif nxt == "PATH" and a == "--data":
            from tests._tiny import write_s1k_rows
            out += [a, write_s1k_rows(tmp / "data.json")]
        elif nxt in ("N", "K", "...") and a.startswith("--"):
            out += [a, {"N": "6", "K": "1", "...": "What is 2+2?"}[nxt]]
        else:
            out.append(a)
            i += 1
            continue
        i += 2
    extra = {
        "generate": ["--max-answer-tokens", "3", "--no-progress", "--out", str(tmp / "gen.jsonl")],
        "eval": ["--limit", "1", "--budgets", "4", "--max-answer-tokens", "2", "--out", str(tmp / "eval_out")],
        "train": ["--max-steps", "1", "--block-size", "256", "--global-batch-size", "1", "--epochs", "1",
                  "--no-progress", "--no-export"],
        "curate": ["--pool", str(ROOT / "tests" / "fixtures" / "curate" / "pool"), "--size", "3", "--no-progress"],
    }.get(sub, [])
    return out + extra


def test_run_the_runnable_commands(tiny, tmp_path, capsys):
    ran = []
    for _, cmd in readme_commands():
        if rule_of(cmd)[0] != "run":
            continue
        words = shlex.split(cmd)
        if words[1:] == ["--version"]:
            assert s1cli.main(["--version"]) == 0
        elif words[1:] == ["bench", "NAME"]:
            assert s1cli.main(["bench"]) == 0 and "load_memory" in capsys.readouterr().out
        else:
            sub, args = words[1], words[2:]
            for path in [a for a in args if a.startswith("../")]:   # paths the README names exist
                # ../shared/data is the shared-data folder (S1_SHARED_DATA when it lives elsewhere)
                where = (require_shared_data() / path[len("../shared/data/"):] if path.startswith("../shared/data/")
                         else ROOT / path)
                assert where.exists(), f"README `{cmd}`: {path} does not exist ({where})"
            full = small_args(sub, args, tiny, tmp_path)
            rc = s1cli.main([sub, *full])
            err = capsys.readouterr().err
            assert rc == 0, f"README `{cmd}` (run as `s1 {sub} {shlex.join(full)}`) exited {rc}:\n{err[-3000:]}"
            if sub == "generate":
                rec = json.loads((tmp_path / "gen.jsonl").read_text())
                assert rec["num_thinking_tokens"] == 6
        ran.append(cmd)
    assert {shlex.split(c)[1] for c in ran} >= {"generate", "eval", "train", "curate", "bench", "--version"}, ran
