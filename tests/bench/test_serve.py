"""bench/serve.py in its --smoke mode: a server on a tiny checkpoint, Poisson and all-at-once
arrivals with budget forcing off and on."""
import json
import os

import pytest

from tests.conftest import require_shared_data

if not (os.environ.get("CI") or os.environ.get("S1_REQUIRE_SHARED_DATA") == "1"):   # .ci/run installs .[serve]
    for module in ("httpx", "fastapi", "uvicorn"):
        pytest.importorskip(module)


def test_bench_serve_smoke(tmp_path):
    """bench/serve.py --smoke: starts `python -m s1.serve` on a tiny checkpoint it makes, sends Poisson
    and all-at-once arrivals with budget forcing off and on, verifies every response, stops the
    server with SIGTERM (exit 0), writes JSON + markdown with the environment record."""
    require_shared_data()
    from bench import serve as B
    out = tmp_path / "serve_smoke"
    rc = B.main(["--smoke", "--num-prompts", "6", "--rates", "20,inf", "--output-len", "4:16", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["server_exit_code"] == 0 and rec["lost_or_corrupted"] == 0
    assert [(r["mode"], r["rate"]) for r in rec["rows"]] == [("off", 20.0), ("off", "inf"), ("on", 20.0), ("on", "inf")]
    for r in rec["rows"]:
        assert r["completed"] == 6 and r["ttft_ms"]["p99"] > 0 and r["output_tok_per_s"] > 0
    assert {"device", "commit", "torch", "date"} <= set(rec)
    assert "| on | inf |" in out.with_suffix(".md").read_text()
