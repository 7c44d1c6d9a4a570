"""bench/gpu.py, the GPU suite's harness, on a CPU with --smoke."""
import json
import subprocess
import sys


def test_gpu_harness_smoke(tmp_path):
    """`python -m bench.gpu` on a CPU with --smoke: parts run in order under their caps, every line
    echoed with its part's name, a summary written; a part without a CPU variant is skipped."""
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--deadline", "300", "--parts",
                        "tests,sampler,kernels", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[sampler] | impl | batch" in r.stdout and "[tests] " in r.stdout
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [p["part"] for p in s["parts"]] == ["tests", "sampler", "kernels"]
    assert [p["status"] for p in s["parts"]] == ["ok", "ok", "skipped (GPU only)"]
    assert (tmp_path / "tests.log").exists() and s["env"]["commit"]
