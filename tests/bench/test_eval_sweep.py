"""bench/eval_sweep.py in its CPU smoke mode."""
import json


def test_bench_eval_sweep_smoke(shared_data, capsys):
    """The GPU benchmark script's CPU smoke mode runs (tiny model, 4 MATH-500 questions)."""
    from s1 import kernels
    from bench import eval_sweep

    with kernels.use_backend("torch"):
        assert eval_sweep.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["requests"] == 8 and result["mean_thinking_tokens"] == [8.0, 16.0]
    assert 0 <= result["harness_fraction"] < 1
