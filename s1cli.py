"""The `s1` console command: one subcommand per pipeline stage.

Each subcommand is also reachable as `python -m <package>` (e.g. `torchrun -m train ...`).
Imports are lazy so `s1 --help` is instant and a stage's dependencies load only when used.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("infer.cli", "generate_main", "decode prompts with budget forcing"),
    "eval": ("evaluation.evaluate", "main", "benchmark sweeps over thinking budgets"),
    "train": ("train.cli", "main", "SFT on s1K-format data (FSDP2; use torchrun for >1 GPU)"),
    "curate": ("curate.cli", "main", "s1K-style selection from a question pool"),
    "bench": ("bench.cli", "main", "run a benchmark script from bench/"),
    "demo": ("pipelines.demo", "main", "the whole pipeline at toy scale on CPU"),
}


def usage() -> str:
    lines = ["usage: s1 <command> [args...]", "", "commands:"]
    lines += [f"  {name:<9} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"s1: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    mod, fn, _ = COMMANDS[cmd]
    return getattr(importlib.import_module(mod), fn)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
