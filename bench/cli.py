"""`s1 bench NAME [args]`: run bench/NAME.py's main(args). `s1 bench` lists the scripts."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

_NOT_SCRIPTS = {"cli", "env", "__main__"}


def scripts() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in _NOT_SCRIPTS)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: s1 bench NAME [args...]\n\nbenchmarks: " + ", ".join(scripts()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in scripts():
        print(f"s1 bench: no benchmark {name!r}; have: {', '.join(scripts())}", file=sys.stderr)
        return 2
    return importlib.import_module(f"bench.{name}").main(rest) or 0
