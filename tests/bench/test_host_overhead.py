"""bench/host_overhead.py: its smoke runs (the table, and --phases)."""
import subprocess
import sys


def test_host_overhead_benchmark_smoke():
    r = subprocess.run([sys.executable, "-m", "bench.host_overhead", "--smoke"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| batch | host us / step" in r.stdout and '"bench": "host_overhead"' in r.stdout
    r = subprocess.run([sys.executable, "-m", "bench.host_overhead", "--smoke", "--phases"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| calls | host | schedule | append_page |" in r.stdout
