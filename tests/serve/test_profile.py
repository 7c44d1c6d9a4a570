"""`s1 serve --profile DIR` (s1/serve/app.py): POST /start_profile and /stop_profile trace the
engine thread into DIR (a gzipped Chrome trace with the engine's phase ranges), --timeline writes
one line per engine step; without --profile both endpoints answer 404 and nothing is recorded."""
from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import require_shared_data

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve_prof") / "tiny", require_shared_data() / "qwen2.5-tokenizer")


def _serve(ckpt, **settings):
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.serve.app import ServerSettings, build_app
    from tests._lib_helpers import serve_in_thread
    engine = LLMEngine(EngineConfig(model=ckpt, max_model_len=256, max_num_seqs=4, num_pages=64))
    app = build_app(engine, ServerSettings(served_model_name="tiny", **settings))
    server, thread, port = serve_in_thread(app)
    return engine, server, thread, f"http://127.0.0.1:{port}"


def _stop(engine, server, thread):
    server.should_exit = True
    thread.join(30)
    engine.close()


def test_start_and_stop_profile_write_a_trace_of_the_engine_phases(ckpt, tmp_path):
    from s1.common import profiling
    prof, tl = tmp_path / "prof", tmp_path / "serve.timeline.jsonl"
    engine, server, thread, url = _serve(ckpt, profile_dir=str(prof), timeline=str(tl))
    body = {"model": "tiny", "prompt": "What is 2+2?", "max_tokens": 5, "ignore_eos": True}
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.post("/v1/completions", json=body).status_code == 200     # before: not traced
            r = c.post("/start_profile")
            assert r.status_code == 200 and r.json()["started"] is True, r.text
            assert c.post("/start_profile").json()["started"] is False          # already running
            assert c.post("/v1/completions", json=body).status_code == 200
            r = c.post("/stop_profile")
            assert r.status_code == 200, r.text
            trace = r.json()["trace"]
            assert c.post("/stop_profile").status_code == 409                   # nothing running any more
            assert c.post("/start_profile").json()["started"] is True           # left running at shutdown:
    finally:
        _stop(engine, server, thread)
    assert len(list(prof.glob("*.trace.json.gz"))) == 2                       # written by the engine thread
    assert profiling.active() is profiling.OFF
    with gzip.open(trace, "rt") as f:
        names = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
    assert {"schedule", "prefill_forward", "decode_forward", "sample_and_force", "postprocess"} <= names
    steps = sorted(int(n.split()[1]) for n in names if n.startswith("step "))
    assert steps and steps[0] > 1                                            # the first request's steps are not in it
    lines = [json.loads(x) for x in tl.read_text().splitlines()]
    assert lines[0]["label"] == "serve" and len(lines) - 1 >= 2 * 5 - 2        # both requests' steps


def test_profile_endpoints_are_404_without_the_flag(ckpt):
    from s1.common import profiling
    engine, server, thread, url = _serve(ckpt)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            for ep in ("/start_profile", "/stop_profile"):
                r = c.post(ep)
                assert r.status_code == 404 and "--profile DIR" in r.json()["error"]["message"], r.text
            assert profiling.active() is profiling.OFF
    finally:
        _stop(engine, server, thread)
