"""The s1 package's subpackages form layers; an import may only point down (or stay inside its own
subpackage). bench/ (repository scripts) sits above the whole package.

    s1.cli                     the `s1` command
    bench                      benchmark scripts (repository only, not installed)
    s1.pipelines               demo, toy task, "train a tiny model and sweep it"
    s1.curate                  s1K selection (uses the engine and the grader)
    s1.evaluation | s1.serve   tasks, grading, metrics, methods, sweeps, reports | the HTTP server
    s1.infer | s1.train        the engine | the trainer (peers: neither imports the other)
    s1.model                   config, decoder, loading, tokenizer + s1 format
    s1.kernels                 Triton kernels and their PyTorch references
    s1.common                  JSONL, paths, dtype names, provenance (pure Python)

Every import counts, including those inside functions (lazy imports still tie the layers).
Relative imports are not used anywhere (one spelling: `from s1.<package> import ...`).
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [("s1.common",), ("s1.kernels",), ("s1.model",), ("s1.infer", "s1.train"), ("s1.evaluation", "s1.serve"),
          ("s1.curate",), ("s1.pipelines",), ("bench",), ("s1.cli",)]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
# the library's names before they moved under s1/: nothing may import them any more
OLD_TOP_LEVEL = ("common", "kernels", "model", "train", "infer", "evaluation", "serve", "curate", "pipelines", "s1cli")


def _unit(module: str) -> str | None:
    """'s1.infer.engine' -> 's1.infer'; 'bench.decode' -> 'bench'; 's1' itself -> 's1'; others -> None."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "bench"
    if parts[0] == "s1":   # `from s1 import __version__` is the package itself
        return ".".join(parts[:2]) if len(parts) > 1 and not parts[1].startswith("_") else "s1"
    return None


def imports(path: pathlib.Path) -> list[tuple[int, str, int]]:
    """(line, module, level) of every import in a file; `from s1 import x` counts as s1.x."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and mod == "s1":
                out += [(node.lineno, f"s1.{a.name}", 0) for a in node.names]
            else:
                out.append((node.lineno, mod, node.level))
    return out


def units(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    out = {}
    for unit in RANK:
        rel = pathlib.Path(*unit.split("."))
        f = root / rel.with_suffix(".py")
        out[unit] = [f] if f.is_file() else sorted((root / rel).rglob("*.py"))
    return out


def violations(root: pathlib.Path) -> list[str]:
    bad = []
    for unit, files in units(root).items():
        rank = RANK[unit]
        for f in files:
            for line, mod, level in imports(f):
                if level:
                    bad.append(f"{f.relative_to(root)}:{line}: relative import")
                    continue
                target = _unit(mod)
                if target is None or target == unit or target == "s1":
                    continue
                if target not in RANK:
                    bad.append(f"{f.relative_to(root)}:{line}: imports {mod} (no layer)")
                elif RANK[target] >= rank:
                    kind = "a peer" if RANK[target] == rank else "a higher layer"
                    bad.append(f"{f.relative_to(root)}:{line}: imports {target} ({kind})")
    return sorted(bad)


def test_no_import_points_upward():
    assert violations(ROOT) == []


def test_every_package_has_a_layer():
    pkgs = {f"s1.{p.parent.name}" for p in (ROOT / "s1").glob("*/__init__.py")}
    assert pkgs <= set(RANK), f"packages without a layer: {sorted(pkgs - set(RANK))}"


def test_a_planted_upward_import_is_caught(tmp_path):
    for pkg in ("s1", "s1/kernels", "s1/infer", "s1/train", "s1/evaluation"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "s1" / "kernels" / "ok.py").write_text("import os\nimport torch\n")
    (tmp_path / "s1" / "infer" / "engine.py").write_text("from s1.kernels import ok\nfrom s1 import kernels\n")
    assert violations(tmp_path) == []
    (tmp_path / "s1" / "kernels" / "bad.py").write_text("def f():\n    from s1.infer.engine import x\n")
    (tmp_path / "s1" / "infer" / "peer.py").write_text("import s1.train.loop\nfrom s1 import train\n")
    (tmp_path / "s1" / "train" / "rel.py").write_text("from .loop import x\n")
    assert violations(tmp_path) == ["s1/infer/peer.py:1: imports s1.train (a peer)",
                                    "s1/infer/peer.py:2: imports s1.train (a peer)",
                                    "s1/kernels/bad.py:2: imports s1.infer (a higher layer)",
                                    "s1/train/rel.py:1: relative import"]


def python_files(root: pathlib.Path) -> list[pathlib.Path]:
    skip = {".git", "build", "dist", ".venv", "venv"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)
                  and not any(part.endswith(".egg-info") for part in p.parts))


def old_name_imports(root: pathlib.Path) -> list[str]:
    """Imports of the library's pre-move top-level names, anywhere in the repository, as code
    (import statements) or as a module string given to importlib / `python -m` / importorskip."""
    bad = []
    for f in python_files(root):
        for line, mod, level in imports(f):
            if level == 0 and mod.split(".")[0] in OLD_TOP_LEVEL:
                bad.append(f"{f.relative_to(root)}:{line}: import {mod}")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if fn in ("import_module", "importorskip", "find_spec") \
                        and node.args[0].value.split(".")[0] in OLD_TOP_LEVEL:
                    bad.append(f"{f.relative_to(root)}:{node.lineno}: {fn}({node.args[0].value!r})")
            if isinstance(node, (ast.List, ast.Tuple)):
                vals = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
                for i, v in enumerate(vals[:-1]):
                    nxt = vals[i + 1]
                    if v == "-m" and isinstance(nxt, str) and nxt.split(".")[0] in OLD_TOP_LEVEL:
                        bad.append(f"{f.relative_to(root)}:{node.lineno}: -m {nxt}")
    return bad


def test_no_import_of_the_old_top_level_names_remains():
    assert old_name_imports(ROOT) == []


def test_old_name_check_catches_each_spelling(tmp_path):
    (tmp_path / "a.py").write_text("import kernels\nfrom infer.engine import X\nimport importlib\n"
                                   "importlib.import_module('model.qwen2')\ncmd = ['python', '-m', 'train']\n"
                                   "from s1 import kernels\nimport s1.infer\n")
    assert old_name_imports(tmp_path) == ["a.py:1: import kernels", "a.py:2: import infer.engine",
                                          "a.py:4: import_module('model.qwen2')", "a.py:5: -m train"]


def test_grader_and_metrics_import_without_torch():
    from tests.helpers import assert_imports_without_torch
    assert_imports_without_torch(["s1.evaluation.grader", "s1.evaluation.metrics", "s1.evaluation.tasks",
                                  "s1.evaluation.methods"])


def _is_test_module(name: str) -> bool:
    return any(part.startswith("test_") for part in name.split("."))


def imports_of_test_modules(root: pathlib.Path) -> list[str]:
    """Imports of a test module (tests/**/test_*.py) by another one, as import statements or as
    importlib.import_module strings. Shared fixtures belong in a conftest.py, shared helpers in a
    helpers module (tests/helpers.py, tests/<package>/helpers.py)."""
    bad = []
    for f in sorted((root / "tests").rglob("test_*.py")):
        rel = f.relative_to(root)
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and getattr(node.func, "attr", None) == "import_module":
                names = [node.args[0].value]
            else:
                continue
            hits = [n for n in names if _is_test_module(n)]
            if hits:
                bad.append(f"{rel}:{node.lineno}: imports {hits[0].lstrip('.')}")
    return bad


def test_no_test_module_imports_another():
    assert imports_of_test_modules(ROOT) == []


def test_test_module_check_catches_each_spelling(tmp_path):
    (tmp_path / "tests" / "infer").mkdir(parents=True)
    (tmp_path / "tests" / "helpers.py").write_text("from tests.infer import test_engine\n")   # not a test module
    (tmp_path / "tests" / "infer" / "test_a.py").write_text(
        "from tests.helpers import make_llm\nfrom tests.infer.conftest import x\nimport tests.infer.test_b\n"
        "from tests.infer import test_b\nfrom test_kernels import cu\nfrom .test_b import y\n"
        "import importlib\nimportlib.import_module('tests.test_engine')\n")
    assert imports_of_test_modules(tmp_path) == [
        "tests/infer/test_a.py:3: imports tests.infer.test_b", "tests/infer/test_a.py:4: imports tests.infer.test_b",
        "tests/infer/test_a.py:5: imports test_kernels", "tests/infer/test_a.py:6: imports test_b",
        "tests/infer/test_a.py:8: imports tests.test_engine"]

