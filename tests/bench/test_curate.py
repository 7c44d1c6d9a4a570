"""bench/curate.py in its --smoke mode (the fixture pool)."""
import json


def test_bench_smoke(tmp_path, shared_data):
    from bench.curate import main

    assert main(["--smoke", "--out", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["counts"]["sources"] == 18 and r["counts"]["select"] == 5 and r["passed"]


def test_bench_smoke_s1_recipe(tmp_path, shared_data):
    from bench.curate import main

    assert main(["--smoke", "--recipe", "s1", "--out", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["bench"] == "curate_modelfree_s1_smoke" and r["counts"]["sources"] == 18 and r["counts"]["select"] == 5
