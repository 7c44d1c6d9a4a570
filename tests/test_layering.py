"""The packages form layers; an import may only point down (or stay inside its own package).

    s1cli
    bench                      benchmark scripts
    pipelines                  demo, toy task, "train a tiny model and sweep it"
    curate                     s1K selection (uses the engine and the grader)
    evaluation | serve         tasks, grading, metrics, methods, sweeps, reports | the HTTP server
    infer | train              the engine | the trainer (peers: neither imports the other)
    model                      config, decoder, loading, tokenizer + s1 format
    kernels                    Triton kernels and their PyTorch references
    common                     JSONL, paths, dtype names, provenance (pure Python)

Every import counts, including those inside functions (lazy imports still tie the layers).
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [("common",), ("kernels",), ("model",), ("infer", "train"), ("evaluation", "serve"), ("curate",),
          ("pipelines",), ("bench",), ("s1cli",)]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def imported_packages(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(root: pathlib.Path) -> list[str]:
    bad = []
    for pkg, rank in RANK.items():
        files = [root / f"{pkg}.py"] if (root / f"{pkg}.py").is_file() else sorted((root / pkg).rglob("*.py"))
        for f in files:
            for line, target in imported_packages(f):
                if target == pkg or target not in RANK:
                    continue
                if RANK[target] >= rank:
                    kind = "a peer" if RANK[target] == rank else "a higher layer"
                    bad.append(f"{f.relative_to(root)}:{line}: imports {target} ({kind})")
    return sorted(bad)


def test_no_import_points_upward():
    assert violations(ROOT) == []


def test_every_package_has_a_layer():
    pkgs = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert pkgs <= set(RANK), f"packages without a layer: {sorted(pkgs - set(RANK))}"


def test_a_planted_upward_import_is_caught(tmp_path):
    for pkg in ("kernels", "infer", "evaluation"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "kernels" / "ok.py").write_text("import os\nimport torch\n")
    (tmp_path / "infer" / "engine.py").write_text("from kernels import ok\n")
    assert violations(tmp_path) == []
    (tmp_path / "kernels" / "bad.py").write_text("def f():\n    from infer.engine import x\n")
    (tmp_path / "infer" / "peer.py").write_text("import train.loop\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    assert violations(tmp_path) == ["infer/peer.py:1: imports train (a peer)",
                                    "kernels/bad.py:2: imports infer (a higher layer)"]


def test_grader_and_metrics_import_without_torch():
    import subprocess
    import sys
    code = ("import sys; import evaluation.grader, evaluation.metrics, evaluation.tasks, evaluation.methods; "
            "bad = [m for m in ('torch', 'infer.llm') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
