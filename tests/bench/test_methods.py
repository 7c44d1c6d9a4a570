"""bench/methods.py in its --smoke mode: the whole methods comparison runs and writes its report."""
import json

from s1.evaluation import sweep


def test_bench_methods_smoke(tmp_path):
    """`python -m bench.methods --smoke`: the whole pipeline (pool, variants, tokenizer, training,
    every method's eval) runs and writes its report; budget forcing's Control is 100%."""
    from bench import methods as bench_methods

    out = tmp_path / "out"
    rc = bench_methods.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "work"), "--threads", "1"])
    assert rc == 0
    for f in ("summary.md", "summary.json", "scaling.png", "result.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "result.json").read_text())
    assert list(res["methods"]) == [m for m in sweep.METHODS if m != "plain"]   # plain: --no-think only
    assert res["methods"]["budget_forcing"]["control"] == 1.0
    assert res["budget_forcing_control_by_construction"] is True
    md = (out / "summary.md").read_text()
    assert "| budget_forcing | 100.0% |" in md
