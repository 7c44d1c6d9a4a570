"""`s1 serve` (serve/): the OpenAI-compatible server, tested with the real `openai` client against a
tiny random-weight checkpoint on CPU; the server runs in-process (uvicorn on a thread, a free
loopback port) except for the SIGTERM test, which runs `python -m s1 serve` as a subprocess.

Greedy (and seeded) outputs are compared token for token with offline `LLM.generate` on the same
checkpoint and settings; streamed deltas are compared with the non-streamed texts.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

from tests.conftest import ROOT, require_shared_data

if os.environ.get("CI") or os.environ.get("S1_REQUIRE_SHARED_DATA") == "1":   # .ci/run installs .[test]
    import fastapi  # noqa: F401
    import httpx
    import openai
    import uvicorn  # noqa: F401
else:
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")

MAX_LEN = 1024
MAX_SEQS = 16
QUESTIONS = ["What is 2+2?", "Name a prime number.", "How many r's are in strawberry?", "Say hi.",
             "Is 91 prime?", "What is the capital of France?", "Sum 1 to 10.", "Define entropy."]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    tok = require_shared_data() / "qwen2.5-tokenizer"
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny", tok)


ENGINE_KW = dict(max_model_len=MAX_LEN, max_num_seqs=MAX_SEQS, num_pages=MAX_SEQS * MAX_LEN // 16)


class Srv(types.SimpleNamespace):
    @property
    def idle(self) -> bool:
        st = self.state
        return (not st.loop.streams and st.open_requests == 0 and self.engine.num_running == 0
                and self.engine.num_waiting == 0 and self.engine.block_manager.num_free == self.engine.num_pages)

    def wait_idle(self, timeout=20.0) -> bool:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.idle:
                return True
            time.sleep(0.02)
        return self.idle

    @contextlib.contextmanager
    def settings(self, **kw):
        s = self.state.settings
        old = {k: getattr(s, k) for k in kw}
        for k, v in kw.items():
            setattr(s, k, v)
        try:
            yield
        finally:
            for k, v in old.items():
                setattr(s, k, v)


@pytest.fixture(scope="module")
def srv(ckpt):
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.serve.app import ServerSettings, build_app
    from tests._lib_helpers import serve_in_thread
    engine = LLMEngine(EngineConfig(model=ckpt, **ENGINE_KW))
    app = build_app(engine, ServerSettings(served_model_name="tiny"))
    server, thread, port = serve_in_thread(app)
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    s = Srv(url=url, port=port, engine=engine, state=app.state.s1, client=client, tok=engine.tokenizer)
    yield s
    server.should_exit = True
    thread.join(30)
    engine.close()


@pytest.fixture(scope="module")
def llm(ckpt):
    from s1.infer.llm import LLM
    with LLM(ckpt, **ENGINE_KW) as m:
        yield m


@pytest.fixture
def idle(srv):
    """Every test starts and ends with an idle server whose pages are all free."""
    assert srv.wait_idle(), "server not idle before the test"
    yield srv
    assert srv.wait_idle(), ("server not idle after the test: "
                             f"{srv.engine.block_manager.num_free}/{srv.engine.num_pages} pages free")


def offline(llm, prompts, raw=False, **kw):
    from s1.infer.sampling import SamplingParams
    params = kw.pop("params", None) or SamplingParams(**kw)
    return llm.generate(prompts, params, raw=raw, use_tqdm=False)


def chat(client, q, stream=False, system=None, **kw):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
    extra = {k: kw.pop(k) for k in list(kw) if k in ("max_thinking_tokens", "min_thinking_tokens", "num_wait",
                                                     "extension", "return_token_ids", "top_k", "ignore_eos",
                                                     "max_answer_tokens")}
    return client.chat.completions.create(model="tiny", messages=msgs, stream=stream, extra_body=extra, **kw)


def collect_chat_stream(stream) -> dict:
    """Concatenate a chat stream per choice: reasoning, content, token ids, finish_reason; usage."""
    out, usage = {}, None
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            d = out.setdefault(c.index, {"reasoning": "", "content": "", "ids": [], "finish": None, "role": None})
            delta = c.delta
            d["role"] = d["role"] or delta.role
            d["reasoning"] += getattr(delta, "reasoning_content", None) or ""
            d["content"] += delta.content or ""
            d["ids"] += getattr(c, "token_ids", None) or []
            if c.finish_reason:
                d["finish"] = c.finish_reason
    return {"choices": [out[i] for i in sorted(out)], "usage": usage}


# ----------------------------------------------------------------------------- basics
def test_models_health_and_help(idle):
    r = httpx.get(idle.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    models = idle.client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    from s1.serve.cli import build_parser
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    assert {"--model", "--host", "--port", "--api-key", "--served-model-name", "--max-queue", "--max-body-bytes",
            "--device", "--dtype", "--max-num-seqs", "--max-model-len", "--gpu-memory-utilization",
            "--page-size", "--enforce-eager"} <= flags
    assert build_parser().parse_args(["--model", "d"]).host == "127.0.0.1"


BUDGETS = [dict(max_thinking_tokens=8, max_tokens=24),
           dict(max_thinking_tokens=12, num_wait=2, min_thinking_tokens=4, max_tokens=30),
           dict(max_thinking_tokens="auto", max_tokens=20),
           dict(max_thinking_tokens=0, max_tokens=12)]


@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_chat_greedy_equals_offline_generate(idle, llm, budget):
    q = QUESTIONS[0]
    ref = offline(llm, [q], temperature=0.0, **budget)[0]
    r = chat(idle.client, q, temperature=0, return_token_ids=True, **budget)
    c = r.choices[0]
    assert c.token_ids == ref.output_token_ids
    assert c.message.reasoning_content == ref.thinking and c.message.content == ref.answer
    assert c.message.role == "assistant" and c.finish_reason == ref.finish_reason
    assert r.usage.completion_tokens == len(ref.output_token_ids)
    assert r.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens_details.reasoning_tokens == ref.num_thinking_tokens
    # the same request streamed: the deltas add up to the same texts and tokens
    s = collect_chat_stream(chat(idle.client, q, stream=True, temperature=0, return_token_ids=True,
                                 stream_options={"include_usage": True}, **budget))
    (sc,) = s["choices"]
    assert sc["role"] == "assistant"
    assert (sc["reasoning"], sc["content"], sc["ids"], sc["finish"]) == \
        (ref.thinking, ref.answer, ref.output_token_ids, ref.finish_reason)
    assert s["usage"].completion_tokens_details.reasoning_tokens == ref.num_thinking_tokens


def test_chat_system_prompt_and_multi_turn(idle, llm):
    from s1.model.tokenizer import THINK_START
    tok = idle.tok
    r = chat(idle.client, "What is 3+4?", system="Be brief.", temperature=0, max_thinking_tokens=4, max_tokens=8)
    assert r.usage.prompt_tokens == len(tok.encode(tok.render_prompt("What is 3+4?", "Be brief.")))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "reasoning_content": "ignored"},
            {"role": "user", "content": [{"type": "text", "text": "What is 3+4?"}]}]
    r = idle.client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=8,
                                            extra_body={"max_thinking_tokens": 4})
    text = tok.apply_chat_template([{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                                     else m["content"][0]["text"]} for m in msgs]) + THINK_START
    assert r.usage.prompt_tokens == len(tok.encode(text))
    ref = offline(llm, [text], raw=True, temperature=0.0, max_tokens=8, max_thinking_tokens=4)[0]
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == (ref.thinking, ref.answer)


def test_n_choices_with_seed_equal_offline_seeds(idle, llm):
    from s1.infer.options import request_seed
    from s1.infer.sampling import SamplingParams
    q, kw = QUESTIONS[2], dict(temperature=1.0, top_k=50, max_thinking_tokens=6, max_tokens=14)
    r = chat(idle.client, q, n=3, seed=7, return_token_ids=True, **kw)
    assert r.choices[0].message.content
    refs = offline(llm, [q] * 3, params=[SamplingParams(seed=request_seed(7, i), **kw) for i in range(3)])
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.token_ids for c in r.choices] == [o.output_token_ids for o in refs]
    assert [c.message.content for c in r.choices] == [o.answer for o in refs]
    assert len({tuple(c.token_ids) for c in r.choices}) > 1           # different seeds, different samples
    assert r.usage.completion_tokens == sum(len(o.output_token_ids) for o in refs)
    assert r.usage.prompt_tokens == len(refs[0].prompt_token_ids)      # the prompt counts once
    s = collect_chat_stream(chat(idle.client, q, n=3, seed=7, stream=True, return_token_ids=True, **kw))
    assert [c["ids"] for c in s["choices"]] == [o.output_token_ids for o in refs]
    assert [(c["reasoning"], c["content"]) for c in s["choices"]] == [(o.thinking, o.answer) for o in refs]


def test_completions_equal_offline_generate(idle, llm):
    tok = idle.tok
    text = tok.render_prompt(QUESTIONS[1])
    ids = tok.encode("The quick brown fox")
    cases = [  # (prompt, extra) ; raw prompts think iff a budget-forcing field is given
        ("Once upon a time", dict(max_tokens=16)),
        (ids, dict(max_tokens=16)),
        (text, dict(max_tokens=24, max_thinking_tokens=8, num_wait=1)),
        (ids, dict(max_tokens=20, max_thinking_tokens=6)),
    ]
    for prompt, extra in cases:
        ref = offline(llm, [prompt], raw=True, temperature=0.0, **extra)[0]
        body = dict(extra, return_token_ids=True)
        mt = body.pop("max_tokens")
        r = idle.client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=mt, extra_body=body)
        c = r.choices[0]
        assert c.token_ids == ref.output_token_ids, (prompt, extra)
        body_ids = ref.output_token_ids[:-1] if ref.finish_reason == "stop" else ref.output_token_ids
        assert c.text == tok.decode(body_ids) and c.finish_reason == ref.finish_reason
        assert r.usage.completion_tokens_details.reasoning_tokens == ref.num_thinking_tokens
        stream = idle.client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=mt,
                                                stream=True, extra_body=body)
        chunks = list(stream)
        assert "".join(ch.choices[0].text for ch in chunks) == c.text
        assert sum((getattr(ch.choices[0], "token_ids", None) or [] for ch in chunks), []) == ref.output_token_ids
        assert chunks[-1].choices[0].finish_reason == ref.finish_reason
    # several prompts in one request: one choice per prompt, in order
    r = idle.client.completions.create(model="tiny", prompt=[ids, ids[:2]], temperature=0, max_tokens=6,
                                       extra_body={"return_token_ids": True})
    refs = offline(llm, [ids, ids[:2]], raw=True, temperature=0.0, max_tokens=6)
    assert [c.token_ids for c in r.choices] == [o.output_token_ids for o in refs]
    assert r.usage.prompt_tokens == len(ids) + 2


def test_sampled_streams_equal_non_streamed(idle):
    """Temperature 1 on random weights samples all over the vocabulary (byte tokens that split
    characters included): streamed deltas must still add up to the final texts exactly."""
    for seed in range(2):
        kw = dict(temperature=1.0, seed=seed, max_thinking_tokens=30, num_wait=1, max_tokens=50,
                  return_token_ids=True)
        r = chat(idle.client, QUESTIONS[seed], **kw)
        s = collect_chat_stream(chat(idle.client, QUESTIONS[seed], stream=True, **kw))
        (c,) = s["choices"]
        assert c["ids"] == r.choices[0].token_ids
        assert (c["reasoning"], c["content"]) == (r.choices[0].message.reasoning_content, r.choices[0].message.content)
        txt = idle.client.completions.create(model="tiny", prompt=QUESTIONS[seed], max_tokens=40, temperature=1.0,
                                             seed=seed)
        st = "".join(ch.choices[0].text for ch in idle.client.completions.create(
            model="tiny", prompt=QUESTIONS[seed], max_tokens=40, temperature=1.0, seed=seed, stream=True))
        assert st == txt.choices[0].text


def test_stop_strings(idle):
    q = QUESTIONS[3]
    kw = dict(temperature=0, max_thinking_tokens=6, max_tokens=40, return_token_ids=True)
    base = chat(idle.client, q, **kw).choices[0]
    ans = base.message.content
    assert len(ans) > 12, ans
    multi = ans[8:12]                                  # a string that spans tokens: cut host-side
    from s1.serve.protocol import engine_stop_tokens
    first = ans.index(multi)
    r = chat(idle.client, q, stop=[multi], **kw)
    c = r.choices[0]
    assert c.message.content == ans[:first] and c.finish_reason == "stop"
    assert c.message.reasoning_content == base.message.reasoning_content
    s = collect_chat_stream(chat(idle.client, q, stop=multi, stream=True, **kw))
    assert s["choices"][0]["content"] == ans[:first] and s["choices"][0]["finish"] == "stop"
    # a stop string that is one token: the engine stops on the device (the token is not in the text)
    single = next(idle.tok.decode([t]) for t in base.token_ids[base.token_ids.index(25) + 2:]
                  if engine_stop_tokens((idle.tok.decode([t]),), idle.tok))
    r = chat(idle.client, q, stop=[single], **kw)
    assert r.choices[0].message.content == ans[:ans.index(single)] and r.choices[0].finish_reason == "stop"
    assert r.choices[0].token_ids[-1] == idle.tok.token_id(single)    # stopped right there, on the device


def test_32_concurrent_streaming_clients(idle, llm):
    from s1.infer.sampling import SamplingParams
    rng = random.Random(0)
    jobs = []
    for i in range(32):
        kw = dict(max_thinking_tokens=rng.choice([4, 8, 12]), num_wait=rng.choice([0, 1, 2]),
                  max_tokens=rng.choice([16, 24, 32]))
        jobs.append((QUESTIONS[i % len(QUESTIONS)] + f" ({i})", kw))
    refs = offline(llm, [q for q, _ in jobs], params=[SamplingParams(temperature=0.0, **kw) for _, kw in jobs])
    client = openai.AsyncOpenAI(base_url=idle.url + "/v1", api_key="none", max_retries=0, timeout=120)
    peak = {"running": 0}

    async def one(q, kw):
        extra = dict(kw, return_token_ids=True)
        mt = extra.pop("max_tokens")
        stream = await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": q}],
                                                      temperature=0, max_tokens=mt, stream=True, extra_body=extra)
        d = {"reasoning": "", "content": "", "ids": [], "finish": None}
        async for ch in stream:
            peak["running"] = max(peak["running"], idle.engine.num_running)
            for c in ch.choices:
                d["reasoning"] += getattr(c.delta, "reasoning_content", None) or ""
                d["content"] += c.delta.content or ""
                d["ids"] += getattr(c, "token_ids", None) or []
                d["finish"] = c.finish_reason or d["finish"]
        return d

    async def main():
        try:
            return await asyncio.gather(*(one(q, kw) for q, kw in jobs))
        finally:
            await client.close()

    got = asyncio.run(main())
    for d, ref in zip(got, refs):
        assert (d["ids"], d["reasoning"], d["content"], d["finish"]) == \
            (ref.output_token_ids, ref.thinking, ref.answer, ref.finish_reason)
    assert peak["running"] > 1          # the clients shared the running batch


def test_disconnect_mid_stream_frees_pages(idle):
    bm, eng = idle.engine.block_manager, idle.engine
    stream = chat(idle.client, QUESTIONS[4], stream=True, temperature=0, max_tokens=MAX_LEN - 60)
    it = iter(stream)
    for _ in range(5):
        next(it)
    assert bm.num_free < eng.num_pages and eng.num_running == 1
    stream.close()                      # the client goes away mid-stream
    assert idle.wait_idle(10), f"{bm.num_free}/{eng.num_pages} pages free after the disconnect"
    # a non-streaming request whose client gives up (timeout) is aborted too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(idle.url + "/v1/completions", timeout=1.0,
                   json={"model": "tiny", "prompt": "x", "max_tokens": MAX_LEN - 10, "ignore_eos": True})
    assert idle.wait_idle(10), f"{bm.num_free}/{eng.num_pages} pages free after the timeout"


# ----------------------------------------------------------------------------- bad input
def _post(srv, path, body=None, raw: bytes | None = None, headers=None):
    return httpx.post(srv.url + path, content=raw if raw is not None else json.dumps(body).encode(),
                      headers={"content-type": "application/json", **(headers or {})}, timeout=30)


MSG = [{"role": "user", "content": "hi"}]
BAD = [  # (path, body, status, param, words in the message)
    ("/v1/chat/completions", {"model": "gpt-4", "messages": MSG}, 400, "model", "does not exist"),
    ("/v1/chat/completions", {"messages": MSG, "max_thinking_tokens": -5}, 400, "max_thinking_tokens", ">= 0"),
    ("/v1/chat/completions", {"messages": MSG, "max_thinking_tokens": "lots"}, 400, "max_thinking_tokens", "auto"),
    ("/v1/chat/completions", {"messages": MSG, "min_thinking_tokens": -1}, 400, "min_thinking_tokens", ">= 0"),
    ("/v1/chat/completions", {"messages": MSG, "max_thinking_tokens": 4, "min_thinking_tokens": 9}, 400,
     "min_thinking_tokens", "exceeds"),
    ("/v1/chat/completions", {"messages": MSG, "num_wait": 1.5}, 400, "num_wait", "integer"),
    ("/v1/chat/completions", {"messages": MSG, "temperature": "hot"}, 400, "temperature", "number"),
    ("/v1/chat/completions", {"messages": MSG, "top_p": 0}, 400, "top_p", "(0, 1]"),
    ("/v1/chat/completions", {"messages": MSG, "max_tokens": 0}, 400, "max_tokens", ">= 1"),
    ("/v1/chat/completions", {"messages": MSG, "n": "2"}, 400, "n", "integer"),
    ("/v1/chat/completions", {"messages": MSG, "stream": "yes"}, 400, "stream", "boolean"),
    ("/v1/chat/completions", {"messages": MSG, "stop": [1]}, 400, "stop", "strings"),
    ("/v1/chat/completions", {"messages": MSG, "seed": -1}, 400, "seed", ">= 0"),
    ("/v1/chat/completions", {"messages": MSG, "extension": 5}, 400, "extension", "string"),
    ("/v1/chat/completions", {"messages": MSG, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "<= 20"),
    ("/v1/chat/completions", {"model": "tiny"}, 400, "messages", "required"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", "non-empty"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "one of"),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]}, 400, "messages", "last"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": " "}]}, 400, "messages[0].content", "empty"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 1200}]}, 400, "messages",
     "context"),
    ("/v1/completions", {"prompt": list(range(MAX_LEN + 5))}, 400, "prompt", "context"),
    ("/v1/completions", {"prompt": [10 ** 7]}, 400, "prompt", "vocabulary"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt", "empty"),
    ("/v1/completions", {"prompt": {"a": 1}}, 400, "prompt", "string"),
    ("/v1/completions", {}, 400, "prompt", "required"),
    ("/v1/completions", [1, 2], 400, None, "JSON object"),
]


@pytest.mark.parametrize("path,body,status,param,words", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_400_naming_the_field(idle, path, body, status, param, words):
    r = _post(idle, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and words in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_malformed_json_oversized_body_and_unknown_route(idle):
    r = _post(idle, "/v1/chat/completions", raw=b'{"messages": [')
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    with idle.settings(max_body_bytes=2000):
        r = _post(idle, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 3000}]})
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
        # a chunked body (no Content-Length) is cut off at the limit too
        r = httpx.post(idle.url + "/v1/completions", content=iter([b'{"prompt": "', b"x" * 3000, b'"}']),
                       timeout=30)
        assert r.status_code == 413
    r = httpx.get(idle.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    with pytest.raises(openai.BadRequestError) as e:                   # as the openai client reports it
        chat(idle.client, "hi", max_thinking_tokens=-1)
    assert e.value.status_code == 400 and e.value.body["param"] == "max_thinking_tokens"


def test_api_key(idle):
    with idle.settings(api_key="sekret"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
            r = _post(idle, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(idle.url + "/v1/models").status_code == 401
        assert httpx.get(idle.url + "/health").status_code == 200                  # health stays open
        with pytest.raises(openai.AuthenticationError):
            idle.client.models.list()
        ok = openai.OpenAI(base_url=idle.url + "/v1", api_key="sekret", max_retries=0)
        assert ok.chat.completions.create(model="tiny", messages=MSG, max_tokens=2).choices[0].finish_reason


def test_full_queue_gets_503_with_retry_after(idle):
    """Requests waiting for their first token beyond --max-queue are refused, not queued."""
    loop = idle.state.loop
    results = []

    def client():
        r = _post(idle, "/v1/completions", {"prompt": "hello", "max_tokens": 3, "temperature": 0})
        results.append(r.status_code)

    with idle.settings(max_queue=2):
        loop.pause()                               # nothing runs: the first two stay waiting
        try:
            threads = [threading.Thread(target=client) for _ in range(2)]
            for t in threads:
                t.start()
            t_end = time.monotonic() + 10
            while loop.num_waiting < 2 and time.monotonic() < t_end:
                time.sleep(0.01)
            assert loop.num_waiting == 2
            r = _post(idle, "/v1/completions", {"prompt": "hello", "max_tokens": 3})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
            r = _post(idle, "/v1/completions", {"prompt": "hello", "max_tokens": 3, "n": 3})
            assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        finally:
            loop.resume()
        for t in threads:
            t.join(30)
    assert results == [200, 200]


# ----------------------------------------------------------------------------- text assembly
def test_streamed_text_equals_make_output_on_random_tokens(srv):
    """ChoiceText (s1/serve/text.py) against the engine's own make_output, on random token streams
    full of byte tokens that split characters, with and without stop strings: every streamed
    prefix stays a prefix, and the concatenation is the final text exactly."""
    from s1.infer.engine import LLMEngine
    from s1.infer.request import RequestOutput
    from s1.serve.text import ChoiceText
    tok = srv.tok
    rng = random.Random(0)
    split = tok.encode("héllo 世界 🙂🎉 ñandú ∑x² — “quoted” 𝔽") + tok.encode("🙂🙂")
    delim = tok.encode("<|im_start|>answer")
    stops = tuple(srv.engine.special.answer_stop_ids)
    for trial in range(150):
        pool = lambda k: [rng.choice(split) if rng.random() < 0.6 else rng.randrange(151643) for _ in range(k)]
        n_think = rng.randrange(0, 30)
        ids = pool(n_think)
        if rng.random() < 0.9:
            ids += ([198] if rng.random() < 0.5 else []) + delim + ([198] if rng.random() < 0.7 else []) + \
                pool(rng.randrange(0, 30))
        reason = rng.choice(["length", "stop", "abort"])
        if reason == "stop":
            ids.append(rng.choice(stops))
        seq = types.SimpleNamespace(output_ids=ids, finish_reason=reason, num_thinking_tokens=n_think,
                                    rules=types.SimpleNamespace(stop_ids=list(stops), thinking=True),
                                    prompt_text="", num_waits_used=0, prompt_ids=[1], num_preemptions=0,
                                    max_thinking_tokens=None, request_id=trial)
        final = LLMEngine.make_output(types.SimpleNamespace(tokenizer=tok), seq)
        stop_strings = ()
        if trial % 3 == 0 and len(final.answer) > 4:
            a = rng.randrange(len(final.answer) - 3)
            stop_strings = (final.answer[a:a + rng.randint(1, 3)],)
        for mode in ("chat", "completion"):
            ct = ChoiceText(tok, mode, stop_strings, stops, thinking=True)
            got = {"reasoning": "", "content": "", "text": ""}
            for j in range(len(ids)):
                last = j == len(ids) - 1
                ro = RequestOutput(request_id=trial, new_token_ids=[ids[j]], num_output_tokens=j + 1,
                                   num_thinking_tokens=min(j + 1, n_think), answer_start=None, finished=last,
                                   output=final if last else None)
                for kind, d in ct.feed(ro) + (ct.finish(final) if last else []):
                    got[kind] += d
                expect = ct.final_texts(final)
                for kind, text in expect.items():
                    assert text.startswith(got[kind]), (trial, mode, kind, got[kind], text)
            assert ct.mismatches == 0
            for kind, text in ct.final_texts(final).items():
                assert got[kind] == text, (trial, mode, kind)
            if mode == "chat":
                assert got["reasoning"] == final.thinking
                cut = final.answer
                for s in stop_strings:
                    cut = cut[:cut.find(s)] if s in cut else cut
                assert got["content"] == cut


def test_protocol_fields_unit():
    from s1.serve import protocol as P
    tok = types.SimpleNamespace(token_id=lambda s: {"<|im_end|>": 151645, "Wait": 14190}[s],
                                decode=lambda ids: {151645: "<|im_end|>", 14190: "Wait"}[ids[0]])
    req = P.parse_completion({"prompt": "x", "stop": ["<|im_end|>", "Wait", "two words"], "top_k": -1, "n": 2,
                              "seed": 3, "max_thinking_tokens": "auto"}, "m", tok)
    assert req.stop_strings == ("<|im_end|>", "Wait", "two words")
    assert req.params[0].stop == ("<|im_end|>", "Wait")              # single tokens also stop on the device
    assert req.params[0].top_k == 0 and req.params[0].max_thinking_tokens == "auto"
    from s1.infer.options import request_seed
    assert [p.seed for p in req.params] == [request_seed(3, 0), request_seed(3, 1)]
    assert req.params[0].temperature == 1.0                            # OpenAI's default
    with pytest.raises(P.APIError) as e:
        P.parse_chat({"messages": MSG, "stream_options": {"include_usage": True}}, "m", tok)
    assert e.value.param == "stream_options"


def test_engine_loop_sleeps_when_idle_and_fails_requests_when_the_engine_dies():
    """s1/serve/engine_loop.py with a fake engine: outputs reach the right queue, an idle engine
    thread waits on its inbox (no polling), and an engine that raises fails every open request."""
    from s1.infer.request import RequestOutput
    from s1.serve.engine_loop import EngineFailure, EngineLoop

    class FakeEngine:
        def __init__(self):
            self.reqs, self.polls, self.explode = {}, 0, False

        def add_prepared(self, prep, request_id=None, auto_prompt_len=None):
            if prep == "bad":
                raise ValueError("extension too long")
            self.reqs[request_id] = 0

        def abort(self, rid):
            return self.reqs.pop(rid, None) is not None

        def has_unfinished(self):
            self.polls += 1
            return bool(self.reqs)

        def step(self):
            if self.explode:
                raise RuntimeError("device lost")
            outs = []
            for rid in list(self.reqs):
                self.reqs[rid] += 1
                done = self.reqs[rid] == 3
                outs.append(RequestOutput(rid, [self.reqs[rid]], self.reqs[rid], 0, None, done))
                if done:
                    del self.reqs[rid]
            return outs

    async def main():
        eng = FakeEngine()
        loop = EngineLoop(eng)
        loop.start(asyncio.get_running_loop())
        try:
            streams = await loop.submit(["a", "b"])
            got = {s.rid: [] for s in streams}
            assert streams[0].queue is streams[1].queue           # one queue per group
            left = 2
            while left:
                ro = await streams[0].queue.get()
                got[ro.request_id] += ro.new_token_ids
                left -= ro.finished
            assert list(got.values()) == [[1, 2, 3], [1, 2, 3]] and loop.num_waiting == 0
            with pytest.raises(ValueError):
                await loop.submit(["a", "bad"])              # all or nothing
            await asyncio.sleep(0.05)
            assert not eng.reqs and not loop.streams and loop.num_waiting == 0
            polls = eng.polls
            await asyncio.sleep(0.3)
            assert eng.polls - polls <= 1, "the idle engine thread polls"
            eng.explode = True
            (s,) = await loop.submit(["c"])
            assert isinstance(await asyncio.wait_for(s.queue.get(), 5), EngineFailure)
            assert not loop.alive
            with pytest.raises(EngineFailure):
                await loop.submit(["d"])
        finally:
            loop.stop(5)

    asyncio.run(main())


# ----------------------------------------------------------------------------- shutdown
def _read_sse(resp) -> list:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            events.append(line[6:])
    return events


def test_sigterm_drains_then_exits_0(ckpt):
    """`s1 serve` in a subprocess: SIGTERM -> new requests get 503, a short open stream finishes,
    a long one is aborted after --shutdown-timeout (its stream still ends with [DONE]), exit 0."""
    cmd = [sys.executable, "-m", "s1", "serve", "--model", ckpt, "--port", "0", "--device", "cpu",
           "--max-model-len", "2048", "--max-num-seqs", "4", "--log-level", "warning", "--shutdown-timeout", "5"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        url, t_end, lines = None, time.monotonic() + 120, []
        while url is None and time.monotonic() < t_end:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
        assert url, "".join(lines)
        threading.Thread(target=lambda: [lines.append(x) for x in p.stderr], daemon=True).start()
        got, done_at = {}, {}

        def stream(name, max_tokens):
            with httpx.stream("POST", url + "/v1/completions", timeout=60,
                              json={"prompt": "count", "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
                                    "temperature": 0}) as r:
                got[name] = _read_sse(r)
                done_at[name] = time.monotonic()

        long_ = threading.Thread(target=stream, args=("long", 2000))
        long_.start()
        time.sleep(1.0)                                    # the long stream is running
        short = threading.Thread(target=stream, args=("short", 60))
        short.start()
        time.sleep(0.3)
        assert not done_at, "a stream finished before SIGTERM: make it longer"
        t_term = time.monotonic()
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        r = httpx.post(url + "/v1/completions", json={"prompt": "late", "max_tokens": 2}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down"
        assert "retry-after" in r.headers
        short.join(30)
        long_.join(30)
        assert p.wait(60) == 0, "".join(lines)
        print({k: round(v - t_term, 2) for k, v in done_at.items()})
    finally:
        if p.poll() is None:
            p.kill()
    for name, reason in (("short", "length"), ("long", "length")):   # cut by shutdown: incomplete
        ev = got[name]
        assert ev[-1] == "[DONE]", (name, ev[-3:])
        assert json.loads(ev[-2])["choices"][0]["finish_reason"] == reason, (name, ev[-2])
    text = "".join(lines)
    assert "draining" in text and "aborted" in text
