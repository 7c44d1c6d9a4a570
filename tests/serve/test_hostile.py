"""`s1 serve` under hostile input and faults (issue 24): a fuzz of the HTTP schema, injected step
failures, a dying engine thread, stop strings and usage. The server runs in-process (uvicorn on a
thread) over a tiny random-weight checkpoint with a short context, so every generation is short.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import random
import time

import pytest

from tests.conftest import require_shared_data

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_LEN = 128
MAX_SEQS = 16


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("hostile") / "tiny",
                                require_shared_data() / "qwen2.5-tokenizer")


class Server:
    def __init__(self, ckpt, **kw):
        from s1.infer.config import EngineConfig
        from s1.infer.engine import LLMEngine
        from s1.serve.app import ServerSettings, build_app
        from tests._lib_helpers import serve_in_thread
        self.engine = LLMEngine(EngineConfig(model=ckpt, max_model_len=MAX_LEN, max_num_seqs=MAX_SEQS,
                                             num_pages=MAX_SEQS * MAX_LEN // 16, **kw))
        self.app = build_app(self.engine, ServerSettings(served_model_name="tiny", max_queue=4096))
        self.state = self.app.state.s1
        self.server, self.thread, port = serve_in_thread(self.app)
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def post(self, path, body=None, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        return self.client.post(path, content=data, headers={"content-type": "application/json"})

    def idle(self, timeout=30.0) -> bool:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            e = self.engine
            if (not self.state.loop.streams and self.state.open_requests == 0 and e.num_running == 0
                    and e.num_waiting == 0 and e.block_manager.num_free == e.num_pages):
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        self.engine.close()


@pytest.fixture(scope="module")
def srv(ckpt):
    s = Server(ckpt)
    yield s
    s.close()


def _health(srv):
    r = srv.client.get("/health")
    return r.status_code, r.json()


# ----------------------------------------------------------------------------- the fuzz
INTS = [0, 1, 2, -1, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -2 ** 63, 10 ** 30]
FLOATS = [math.nan, math.inf, -math.inf, 1e-39, 1e-6, 0.0, -0.0, 0.5, 1.0, 2.0, 1e308, -1.5]
WRONG = ["x", "", [], {}, None, True, False, [1, "a"], {"a": 1}, "auto", "NaN"]
TEXTS = ["hi", "What is 2+2?", "", " ", "é🙂\u0000\u202e\ud7ff", "word " * 400, "<|im_end|>", "<|im_start|>think",
         "\n\n", "x" * 2000]
FIELDS = ["max_tokens", "n", "temperature", "top_p", "top_k", "seed", "stop", "stream", "max_thinking_tokens",
          "min_thinking_tokens", "num_wait", "max_answer_tokens", "extension", "end_thinking", "ignore_eos",
          "return_token_ids", "stream_options", "model", "logprobs", "best_of", "max_completion_tokens", "user"]
TYPOS = ["max_thinking_token", "temprature", "top-p", "maxTokens", "stopp", "numwait", "seeds", "🙂", "n ", ""]


def _value(rng, field):
    r = rng.random()
    if r < 0.3:
        return rng.choice(INTS)
    if r < 0.5:
        return rng.choice(FLOATS)
    if r < 0.65:
        return rng.choice(WRONG)
    if field == "stop":
        return [rng.choice(TEXTS)[:rng.randint(1, 40)] or "s" for _ in range(rng.randint(0, 20))]
    if field in ("extension", "end_thinking"):
        return rng.choice(TEXTS)
    if field == "stream_options":
        return {"include_usage": rng.choice([True, False, 1])}
    return rng.choice(INTS[:5])


def _prompt(rng):
    r = rng.random()
    if r < 0.4:
        return rng.choice(TEXTS)
    if r < 0.6:
        return [rng.choice([1, 100, 151643, 151645, 2 ** 40, -1, 10 ** 7]) for _ in range(rng.randint(0, 30))]
    if r < 0.75:
        return [rng.choice(TEXTS) for _ in range(rng.randint(0, 5))]
    if r < 0.85:
        return [[rng.randint(0, 1000) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 4))]
    return rng.choice(WRONG)


def fuzz_case(rng) -> tuple[str, dict | bytes, bool]:
    """(path, body or raw bytes, streamed). Most bodies are one or a few mutations of a good one."""
    if rng.random() < 0.04:
        return "/v1/completions", rng.choice([b'{"prompt": ', b"[" * 100000, b"\xff\xfe", b"null", b'"x"',
                                             b'{"prompt": "a", "prompt": 1}', b"", b"{" + b" " * 1000]), False
    chat = rng.random() < 0.5
    body = {"max_tokens": rng.randint(1, 4), "temperature": rng.choice([0, 0.7, 1.0])}
    if chat:
        body["messages"] = [{"role": "user", "content": rng.choice(TEXTS[:3])}]
    else:
        body["prompt"] = rng.choice(TEXTS[:2])
    if rng.random() < 0.3:
        body.update(max_thinking_tokens=rng.randint(0, 3), num_wait=rng.randint(0, 1))
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        f = rng.choice(FIELDS)
        body[f] = _value(rng, f)
    if rng.random() < 0.15:
        if chat:
            body["messages"] = rng.choice([[{"role": "user", "content": _prompt(rng)}], [], "x",
                                           [{"role": "tool", "content": "x"}], [{"content": "x"}],
                                           [{"role": "user", "content": [{"type": "text", "text": "é"}]}]])
        else:
            body["prompt"] = _prompt(rng)
    if rng.random() < 0.05:
        body[rng.choice(TYPOS)] = 5
    if rng.random() < 0.03:
        body["n"] = rng.choice([64, 128, 129])
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 8 and rng.random() < 0.9:
        body["max_tokens"] = 4                        # keep generations short (the context caps the rest)
    stream = body.get("stream") is True
    return ("/v1/chat/completions" if chat else "/v1/completions"), body, stream


def _send(srv, case, drop: bool):
    path, body, stream = case
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()   # NaN/Infinity as JSON literals
    headers = {"content-type": "application/json"}
    if not stream:
        r = srv.client.post(path, content=raw, headers=headers)
        return r.status_code, r.content
    with srv.client.stream("POST", path, content=raw, headers=headers) as r:
        if r.status_code != 200:
            return r.status_code, r.read()
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if drop:                                  # the client goes away mid-stream
                    return 200, b"dropped"
        return 200, events


def test_fuzz_the_http_schema(srv):
    """1,200 seeded-random requests (huge and negative integers, NaN/Infinity, wrong types, empty
    and huge prompts, unicode, long stop lists, n up to its limit, streaming and not, dropped
    streams, malformed bodies), 8 at a time: every answer is 2xx, 4xx or 503 -- never 500 --
    with an OpenAI error body naming the field on a 400; streams end with [DONE]; afterwards the
    KV pool is back to its starting free count, /health is ok, and a normal request answers."""
    rng = random.Random(24)
    n = 1200
    cases = [fuzz_case(rng) for _ in range(n)]
    drops = [rng.random() < 0.1 for _ in range(n)]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda a: _send(srv, *a), zip(cases, drops)))
    dt = time.monotonic() - t0
    counts = {}
    for (path, body, stream), (status, content) in zip(cases, results):
        counts[status] = counts.get(status, 0) + 1
        assert status < 500 or status == 503, (status, body, content[:500])
        if status == 400:
            err = json.loads(content)["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        if status == 200 and isinstance(content, list):
            assert content[-1] == "[DONE]", (body, content[-3:])
            assert not any('"error"' in e for e in content), (body, content)
        elif status == 200 and content != b"dropped":
            d = json.loads(content)
            assert d["usage"]["completion_tokens"] >= 0 and d["choices"], d
            assert all(c["finish_reason"] in ("stop", "length") for c in d["choices"]), d
    print(f"\nfuzz: {n} requests in {dt:.1f} s: {dict(sorted(counts.items()))}")
    assert counts.get(200, 0) >= 200 and counts.get(400, 0) >= 200, counts
    assert srv.idle(), f"{srv.engine.block_manager.num_free}/{srv.engine.num_pages} pages free"
    assert _health(srv)[0] == 200
    r = srv.post("/v1/completions", {"prompt": "hi", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("body,param,words", [
    ({"prompt": "x", "max_thinking_tokens": 9223372036854775808}, "max_thinking_tokens", "<="),
    ({"prompt": "x", "min_thinking_tokens": 2 ** 63}, "min_thinking_tokens", "<="),
    ({"prompt": "x", "num_wait": 2 ** 63}, "num_wait", "<="),
    ({"prompt": "x", "max_answer_tokens": 2 ** 63}, "max_answer_tokens", "<="),
    ({"prompt": "x", "top_k": 2 ** 63}, "top_k", "<="),
    ({"prompt": "x", "seed": 2 ** 64}, "seed", "<="),
    ({"prompt": "x", "temperature": math.nan}, "temperature", "finite"),
    ({"prompt": "x", "top_p": math.inf}, "top_p", "finite"),
    ({"prompt": "x", "max_thinking_token": 5}, "max_thinking_token", "did you mean 'max_thinking_tokens'"),
    ({"prompt": "x", "temprature": 0.5}, "temprature", "did you mean 'temperature'"),
    ({"prompt": "x", "stop": ["a" * 2000]}, "stop", "at most"),
])
def test_issue_24_requests_get_400_and_the_server_stays_up(srv, body, param, words):
    r = srv.post("/v1/completions", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err
    assert _health(srv)[0] == 200
    r = srv.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200


def test_tiny_temperature_is_greedy_over_http(srv):
    base = {"prompt": "hello", "max_tokens": 6, "ignore_eos": True, "return_token_ids": True}
    ref = srv.post("/v1/completions", dict(base, temperature=0)).json()["choices"][0]["token_ids"]
    got = srv.post("/v1/completions", dict(base, temperature=1e-39, seed=3)).json()["choices"][0]["token_ids"]
    assert got == ref and len(set(got)) > 1 or got == ref


# ----------------------------------------------------------------------------- stop strings and usage
def test_stop_string_ends_generation_within_the_step_and_usage_counts_delivered_tokens(srv):
    base = {"prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": True, "temperature": 0,
            "return_token_ids": True}
    full = srv.post("/v1/completions", base).json()["choices"][0]
    tok = srv.engine.tokenizer
    ids = full["token_ids"]
    k = next(k for k in range(6, len(ids)) if len(tok.decode(ids[:k])) > len(tok.decode(ids[:k - 1])))
    text_k = tok.decode(ids[:k])
    stop = text_k[-1]
    cut = full["text"].find(stop)
    n0 = srv.engine.counters["output_tokens"]
    for stream in (False, True):
        body = dict(base, stop=[stop], stream=stream, **({"stream_options": {"include_usage": True}} if stream else {}))
        if stream:
            with srv.client.stream("POST", "/v1/completions", content=json.dumps(body).encode(),
                                   headers={"content-type": "application/json"}) as r:
                ev = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
            text = "".join(c["text"] for e in ev for c in e["choices"])
            got_ids = [t for e in ev for c in e["choices"] for t in c.get("token_ids", [])]
            finish = [c["finish_reason"] for e in ev for c in e["choices"] if c["finish_reason"]]
            usage = ev[-1]["usage"]
        else:
            d = srv.post("/v1/completions", body).json()
            text, got_ids, finish, usage = (d["choices"][0]["text"], d["choices"][0]["token_ids"],
                                            [d["choices"][0]["finish_reason"]], d["usage"])
        assert text == full["text"][:cut] and finish == ["stop"], (text, finish)
        assert got_ids == ids[:len(got_ids)] and usage["completion_tokens"] == len(got_ids)
        assert tok.decode(got_ids).find(stop) >= 0 and tok.decode(got_ids[:-1]).find(stop) < 0
    # the engine generated no token past the one that completed the match (sync CPU engine)
    assert srv.engine.counters["output_tokens"] - n0 == 2 * len(got_ids)
    assert srv.idle()


# ----------------------------------------------------------------------------- faults
def test_a_failed_step_fails_its_requests_and_the_server_goes_on(srv, monkeypatch):
    """An exception inside one engine step: that step's requests get 503 (or an error event and
    [DONE] on a stream), /health stays ok and counts it, the next request answers, pages are free."""
    runner = srv.engine.runner
    real, fired = runner.run, []

    def run(seqs, is_prefill):
        if not fired and not is_prefill:
            fired.append(len(seqs))
            raise RuntimeError("injected step failure")
        return real(seqs, is_prefill)

    monkeypatch.setattr(runner, "run", run)
    body = {"prompt": "hi", "max_tokens": 4, "ignore_eos": True}
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda _: srv.post("/v1/completions", body), range(4)))
    assert fired and all(r.status_code in (200, 503) for r in rs), [r.text for r in rs]
    failed = [r for r in rs if r.status_code == 503]
    assert failed and all("injected step failure" in r.json()["error"]["message"] for r in failed)
    status, h = _health(srv)
    assert status == 200 and h["step_failures"] >= 1, h
    assert srv.post("/v1/completions", body).status_code == 200
    assert srv.idle()


def test_engine_thread_death_fails_everything_with_503_and_health_says_so(ckpt):
    """Every step fails (a dead device): each request fails with 503; after 3 failed steps in a
    row the engine thread stops: every open request and stream fails at once with 503, /health is 503 "engine failed", new requests get
    503 at once, and shutdown is prompt."""
    s = Server(ckpt)
    try:
        def boom(seqs, is_prefill):
            time.sleep(0.05)
            raise RuntimeError("device lost")
        s.engine.runner.run = boom
        body = {"prompt": "hi", "max_tokens": 4}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(s.post, "/v1/completions", body) for _ in range(6)]
            futs += [ex.submit(_send, s, ("/v1/completions", dict(body, stream=True), True), False)]
            rs = [f.result(timeout=60) for f in futs]
        for r in rs[:-1]:
            assert r.status_code == 503, r.text
        status, events = rs[-1]
        assert status == 503 or (events[-1] == "[DONE]" and '"code": "engine_failure"' in events[-2]), events
        for _ in range(6):                  # each failed step is counted; 3 in a row stop the thread
            if not s.state.loop.alive:
                break
            assert s.post("/v1/completions", body).status_code == 503
        status, h = _health(s)
        assert status == 503 and h["status"] == "engine failed" and "device lost" in h["error"], h
        t0 = time.monotonic()
        r = s.post("/v1/completions", body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_failure" and time.monotonic() - t0 < 5
    finally:
        t0 = time.monotonic()
        s.close()
        assert time.monotonic() - t0 < 10
