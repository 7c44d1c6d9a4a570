"""`s1 bench NAME [args]`: run bench/NAME.py's main(args). `s1 bench` lists the scripts."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import bench
from s1.common import profiling
from s1.common.cli import HelpFormatter

_NOT_SCRIPTS = {"cli", "env", "standin", "__main__"}   # modules, not scripts


def scripts() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in _NOT_SCRIPTS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 bench", formatter_class=HelpFormatter,
                                description="Run a benchmark script from bench/ (also `python -m bench.NAME`); "
                                            "each writes its numbers with device, commit, versions and date.",
                                epilog="benchmarks: " + ", ".join(scripts()))
    p.add_argument("name", nargs="?", help="the script, bench/NAME.py (`s1 bench NAME --help`: its flags)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script (except the profiling flags)")
    profiling.add_arguments(p)
    return p


def split_profiling(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The profiling flags (--profile DIR, --profile-steps A:B, --timeline FILE) anywhere in a
    script's arguments -> (them, the script's own arguments)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    profiling.add_arguments(p)
    return p.parse_known_args(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in scripts():
        print(f"s1 bench: no benchmark {name!r}; have: {', '.join(scripts())}", file=sys.stderr)
        return 2
    try:
        prof, rest = split_profiling(rest)
        profiling.check_arguments(prof)
    except (ValueError, SystemExit) as e:
        print(f"s1 bench: {e if isinstance(e, ValueError) else 'bad profiling flag'}", file=sys.stderr)
        return 2
    script = importlib.import_module(f"bench.{name}")
    with profiling.session_from_args(prof, f"bench-{name}"):
        return script.main(rest) or 0
