"""The `s1` console command: one subcommand per pipeline stage.

Each subcommand is also reachable as `python -m <package>` (e.g. `torchrun -m train ...`).
Imports are lazy: `s1 --help`, `s1 --version` and every `s1 <command> --help` answer without
importing torch; a stage's dependencies load only when it runs. Every command module has a
`build_parser()` next to its entry point (tests/test_cli.py walks them all).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

__version__ = "0.1.0"   # setup.py reads it from here

COMMANDS = {
    "generate": ("infer.cli", "generate_main", "decode prompts with budget forcing"),
    "eval": ("evaluation.cli", "main", "benchmark sweeps over thinking budgets"),
    "train": ("train.cli", "main", "SFT on s1K-format data (FSDP2; use torchrun for >1 GPU)"),
    "curate": ("curate.cli", "main", "s1K-style selection from a question pool"),
    "bench": ("bench.cli", "main", "run a benchmark script from bench/"),
    "demo": ("pipelines.demo", "main", "the whole pipeline at toy scale on CPU"),
    "serve": ("serve.cli", "main", "OpenAI-compatible server with budget forcing per request"),
}
_FALLBACK = {"evaluation.cli": "evaluation.evaluate"}   # the eval CLI's module before its move


def command_module(cmd: str) -> str:
    mod = COMMANDS[cmd][0]
    if mod in _FALLBACK and importlib.util.find_spec(mod) is None:
        return _FALLBACK[mod]
    return mod


def usage() -> str:
    lines = ["usage: s1 <command> [args...]      (s1 <command> --help: the command's flags)",
             "       s1 --version", "", "commands:"]
    lines += [f"  {name:<9} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "CPU threads: --threads N on generate/train/demo, or S1_THREADS=N (default: one thread "
                  "for tiny models on CPU, else torch's default)"]
    return "\n".join(lines)


def version() -> str:
    return f"s1 {__version__} (s1-lowlevel, Python {sys.version.split()[0]})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(version())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"s1: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    _, fn, _ = COMMANDS[cmd]
    return getattr(importlib.import_module(command_module(cmd)), fn)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
