"""The `s1` console command: one subcommand per pipeline stage.

`python -m s1` is the same command. Each stage is also reachable as `python -m s1.<package>` (e.g.
`torchrun -m s1.train ...`); benchmarks live in the repository's bench/ (see `s1 bench`).
Imports are lazy: `s1 --help`, `s1 --version` and every `s1 <command> --help` answer without
importing torch; a stage's dependencies load only when it runs. Every command module has a
`build_parser()` next to its entry point (tests/test_cli.py walks them all).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from s1 import __version__

COMMANDS = {
    "generate": ("s1.infer.cli", "generate_main", "decode prompts with budget forcing"),
    "eval": ("s1.evaluation.cli", "main", "benchmark sweeps over thinking budgets"),
    "train": ("s1.train.cli", "main", "SFT on s1K-format data (FSDP2; use torchrun for >1 GPU)"),
    "curate": ("s1.curate.cli", "main", "s1K-style selection from a question pool"),
    "bench": ("bench.cli", "main", "run a benchmark script from the repository's bench/ (a clone, not the wheel)"),
    "demo": ("s1.pipelines.demo", "main", "the whole pipeline at toy scale on CPU"),
    "serve": ("s1.serve.cli", "main", "OpenAI-compatible server with budget forcing per request"),
}


def command_module(cmd: str) -> str:
    return COMMANDS[cmd][0]


def bench_root() -> Path | None:
    """The checkout whose bench/ holds the benchmark scripts, or None.

    bench/ is a repository folder, not part of the installed package: its scripts write their
    numbers into bench/results/ next to the experiment log (bench/NOTES.md) with the checkout's
    commit, and several compare against test-only dependencies (transformers, pytest). Found
    beside this package (an editable install or a clone on sys.path), else in the current
    directory or one of its parents."""
    here = Path(__file__).resolve().parents[1]
    for d in (here, *(p for p in (Path.cwd(), *Path.cwd().parents))):
        if (d / "bench" / "__init__.py").is_file() and (d / "bench" / "NOTES.md").is_file() and (d / "s1").is_dir():
            return d
    return None


def _load(cmd: str):
    if cmd == "bench":
        root = bench_root()
        if root is None:
            raise SystemExit("s1 bench: the benchmark scripts live in the repository's bench/ folder, which the "
                             "installed package does not include; run `s1 bench` inside a clone of the repository "
                             "(or `python -m bench.NAME` from its root)")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    return importlib.import_module(command_module(cmd))


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
    return getattr(_load(cmd), fn)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
