"""bench/serve.py in its --smoke mode: a server on a tiny checkpoint, Poisson and all-at-once
arrivals with budget forcing off and on."""
import contextlib
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


# ----------------------------------------------------------------------------- vLLM-style metrics
def test_statistics_on_fixed_numbers():
    """percentile / summarize against numpy on fixed numbers; goodput counts the requests that meet
    every SLO given (a one-token request has no TPOT and meets that SLO)."""
    import numpy as np

    from bench import serve as B
    xs = [0.012, 0.5, 0.031, 0.2, 0.2, 1.7, 0.04, 0.9, 0.013, 0.077, 0.3]
    for p in (1, 10, 25, 50, 75, 90, 95, 99, 99.9):
        assert B.percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)), rel=1e-12)
    s = B.summarize(xs, [90, 99.5])
    ms = np.array(xs) * 1e3
    assert s["mean"] == pytest.approx(ms.mean()) and s["median"] == pytest.approx(np.median(ms))
    assert s["std"] == pytest.approx(ms.std()) and s["p90"] == pytest.approx(np.percentile(ms, 90))
    assert s["p99.5"] == pytest.approx(np.percentile(ms, 99.5))
    assert B.summarize([], [99]) == {"mean": None, "median": None, "std": None, "p99": None}
    R = B.Result
    rs = [R(0, ttft=0.1, tpot=0.02, latency=1.0), R(1, ttft=0.6, tpot=0.01, latency=0.9),
          R(2, ttft=0.2, tpot=0.06, latency=2.0), R(3, ttft=0.5, tpot=None, latency=0.5)]
    assert B.good_requests(rs, {"ttft": 500}) == 3
    assert B.good_requests(rs, {"ttft": 500, "tpot": 50}) == 2
    assert B.good_requests(rs, {"ttft": 500, "tpot": 50, "e2el": 900}) == 1
    assert B.parse_goodput(["ttft:500", "tpot:12.5"]) == {"ttft": 500.0, "tpot": 12.5}
    for bad in (["ttft"], ["ttfb:3"], ["tpot:x"], ["e2el:-1"]):
        with pytest.raises(ValueError, match="--goodput"):
            B.parse_goodput(bad)


def test_bench_serve_against_in_process_server(tmp_path):
    """The vLLM-style run against an already running server (--url: any OpenAI-compatible one):
    a rate sweep with gamma arrivals and max concurrency, percentiles, goodput and the plot, then the
    ShareGPT and reasoning datasets on the chat endpoint; the result JSON has vLLM's fields."""
    require_shared_data()
    from bench import serve as B
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.serve.app import ServerSettings, build_app
    from tests._lib_helpers import serve_in_thread
    from tests._tiny import make_tiny_checkpoint
    tok_dir = str(B.tokenizer_dir())
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", tok_dir)
    engine = LLMEngine(EngineConfig(model=ckpt, max_model_len=512, max_num_seqs=8, num_pages=256))
    server, thread, port = serve_in_thread(build_app(engine, ServerSettings(served_model_name="tiny")))
    url = f"http://127.0.0.1:{port}"
    try:
        out = tmp_path / "run"
        rc = B.main(["--url", url, "--num-prompts", "5", "--rates", "30,inf",
                     "--input-len", "4:12", "--output-len", "3:8", "--budget-forcing", "off", "--verify",
                     "--percentiles", "50,90,99", "--goodput", "ttft:60000", "tpot:1", "--burstiness", "0.5",
                     "--max-concurrency", "3", "--plot", "--out", str(out)])
        assert rc == 0
        rec = json.loads(out.with_suffix(".json").read_text())
        assert {"device", "commit", "torch", "date", "backend", "model_id", "percentiles", "goodput"} <= set(rec)
        assert rec["model_id"] == "tiny" and rec["lost_or_corrupted"] == 0
        assert [r["request_rate"] for r in rec["rows"]] == [30.0, "inf"]
        for r in rec["rows"]:
            assert r["completed"] == 5 and r["max_concurrency"] == 3 and r["burstiness"] == 0.5
            for m in ("ttft", "tpot", "itl", "e2el"):
                for st in ("mean", "median", "std", "p50", "p90", "p99"):
                    assert r[f"{st}_{m}_ms"] is not None and r[f"{st}_{m}_ms"] >= 0, (st, m)
                assert r[f"p50_{m}_ms"] == pytest.approx(r[f"median_{m}_ms"])
                assert r[f"p50_{m}_ms"] <= r[f"p90_{m}_ms"] <= r[f"p99_{m}_ms"]
            assert 15 <= r["total_output_tokens"] <= 40         # 5 requests of 3..8 tokens (ignore_eos)
            assert r["total_token_throughput"] == pytest.approx(
                (r["total_input_tokens"] + r["total_output_tokens"]) / r["duration"])
            assert r["request_goodput"] == 0.0         # a TPOT SLO of 1 ms is not met on this CPU
        assert (tmp_path / "run_latency.png").stat().st_size > 10_000
        # ShareGPT-format file on the chat endpoint with OpenAI fields only (--plain, as for vLLM);
        # the reply's token count is max_tokens
        share = tmp_path / "share.json"
        share.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Tell me a joke."},
                                                        {"from": "gpt", "value": "Why did the chicken cross?"}]},
                                     {"conversations": [{"from": "human", "value": "Hi"}]}]))
        out2 = tmp_path / "share"
        assert B.main(["--url", url, "--tokenizer", tok_dir, "--dataset-name", "sharegpt", "--dataset", str(share),
                       "--endpoint", "chat", "--num-prompts", "2", "--rates", "inf", "--plain",
                       "--out", str(out2)]) == 0
        r = json.loads(out2.with_suffix(".json").read_text())["rows"][0]
        n = len(engine.tokenizer.encode("Why did the chicken cross?"))
        assert r["completed"] == 2 and r["total_output_tokens"] == 2 * n
        # reasoning: questions with a thinking budget, budget forcing on every request
        out3 = tmp_path / "reason"
        assert B.main(["--url", url, "--dataset-name", "reasoning", "--thinking-budget", "6", "--output-len", "2:2",
                       "--num-prompts", "2", "--rates", "inf", "--out", str(out3)]) == 0
        rec3 = json.loads(out3.with_suffix(".json").read_text())
        assert rec3["endpoint"] == "chat" and rec3["thinking_budget"] == 6
        assert rec3["rows"][0]["mode"] == "reasoning" and rec3["rows"][0]["completed"] == 2
        assert rec3["rows"][0]["total_output_tokens"] <= 2 * 8
        for bad in (["--goodput", "ttfx:3"], ["--burstiness", "0"], ["--dataset-name", "sharegpt"],
                    ["--percentiles", "0,100"]):
            with pytest.raises(SystemExit) if bad[0] == "--percentiles" else contextlib.nullcontext():
                assert B.main(["--url", url, "--out", "none", *bad]) == 2
    finally:
        server.should_exit = True
        thread.join(30)
        engine.close()
