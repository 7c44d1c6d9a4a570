"""`s1 serve` conveniences of issue 28: other servers' field names (reasoning, thinking-budget
aliases), /tokenize and /detokenize, logprobs (checked against transformers' fp32 logits), and
/metrics (parsed with prometheus_client's parser, counters moving as requests complete).
One in-process server on a tiny random checkpoint (hidden 32), as tests/serve/test_app.py."""
from __future__ import annotations

import functools
import json
import os

import pytest

from tests.conftest import require_shared_data

if os.environ.get("CI") or os.environ.get("S1_REQUIRE_SHARED_DATA") == "1":   # .ci/run installs .[test]
    import httpx
    import prometheus_client.parser as prom
else:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    prom = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.serve.app import ServerSettings, build_app
    from tests._lib_helpers import serve_in_thread
    from tests._tiny import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("extras") / "tiny", require_shared_data() / "qwen2.5-tokenizer")
    engine = LLMEngine(EngineConfig(model=ckpt, max_model_len=512, max_num_seqs=8, num_pages=256))
    app = build_app(engine, ServerSettings(served_model_name="tiny"))
    server, thread, port = serve_in_thread(app)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    yield client, engine, ckpt
    client.close()
    server.should_exit = True
    thread.join(30)
    engine.close()


CHAT = [{"role": "user", "content": "What is 2+2?"}]


def chat(client, **kw):
    r = client.post("/v1/chat/completions", json={"messages": CHAT, "temperature": 0, **kw})
    return r


def sse(client, path, body) -> list[dict]:
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


# ----------------------------------------------------------------------------- names of other servers
def test_reasoning_next_to_reasoning_content(srv):
    client = srv[0]
    r = chat(client, max_tokens=12, max_thinking_tokens=5).json()
    m = r["choices"][0]["message"]
    assert m["reasoning"] == m["reasoning_content"] and m["reasoning"]
    chunks = sse(client, "/v1/chat/completions", {"messages": CHAT, "temperature": 0, "max_tokens": 12,
                                                  "max_thinking_tokens": 5})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    both = [d for d in deltas if "reasoning_content" in d]
    assert both and all(d["reasoning"] == d["reasoning_content"] for d in both)
    assert "".join(d["reasoning"] for d in both) == m["reasoning"]


@pytest.mark.parametrize("alias", ["thinking_token_budget", "thinking_budget", "thinking_budget_tokens"])
def test_thinking_budget_aliases(srv, alias):
    """Each alias is max_thinking_tokens: the same greedy tokens and reasoning_tokens; the cap binds
    (3 thinking tokens where the model would think on); equal duplicates pass, different ones -> 400."""
    client = srv[0]
    ref = chat(client, max_tokens=16, max_thinking_tokens=3, return_token_ids=True).json()
    got = chat(client, max_tokens=16, return_token_ids=True, **{alias: 3}).json()
    assert got["choices"][0]["token_ids"] == ref["choices"][0]["token_ids"]
    assert got["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    free = chat(client, max_tokens=16, return_token_ids=True).json()
    assert free["usage"]["completion_tokens_details"]["reasoning_tokens"] > 3     # the cap did something
    assert chat(client, max_tokens=4, max_thinking_tokens=3, **{alias: 3}).status_code == 200
    r = chat(client, max_tokens=4, max_thinking_tokens=3, **{alias: 4})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == alias and "conflicting" in err["message"] and err["code"] == "conflicting_parameters"
    r = chat(client, max_tokens=4, **{alias: -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == alias


# ----------------------------------------------------------------------------- /tokenize, /detokenize
def test_tokenize_detokenize_round_trip(srv):
    client, engine, _ = srv
    tok = engine.tokenizer
    text = "Hello, world! 2+2=4 \u00e9t\u00e9 \u2211"
    r = client.post("/tokenize", json={"model": "tiny", "prompt": text, "return_token_strs": True}).json()
    assert r["tokens"] == tok.encode(text) and r["count"] == len(r["tokens"]) and r["max_model_len"] == 512
    assert r["token_strs"] == [tok.decode([i]) for i in r["tokens"]]
    assert client.post("/detokenize", json={"tokens": r["tokens"]}).json() == {"prompt": text}
    # messages: the prompt /v1/chat/completions would run (usage.prompt_tokens agrees)
    r = client.post("/tokenize", json={"messages": CHAT}).json()
    assert r["token_strs"] is None
    usage = chat(client, max_tokens=1).json()["usage"]
    assert r["count"] == usage["prompt_tokens"]
    assert client.post("/detokenize", json={"tokens": r["tokens"]}).json()["prompt"].endswith("<|im_start|>think")
    for path, body, param in [("/tokenize", {"prompt": 3}, "prompt"), ("/tokenize", {"promt": "x"}, "promt"),
                              ("/tokenize", {}, "prompt"), ("/detokenize", {"tokens": [1, -1]}, "tokens"),
                              ("/detokenize", {"tokens": [10 ** 9]}, "tokens"), ("/detokenize", {}, "tokens"),
                              ("/tokenize", {"prompt": "x", "model": "other"}, "model")]:
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, body, r.text)


# ----------------------------------------------------------------------------- logprobs
@functools.lru_cache(maxsize=1)
def _hf_model(ckpt):
    import torch
    import transformers
    return transformers.Qwen2ForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()


def _hf_logprobs(ckpt, ids):
    """log_softmax of transformers' fp32 logits at every position of `ids` (the oracle)."""
    import torch
    hf = _hf_model(str(ckpt))
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), dim=-1)


def test_logprobs_equal_transformers_log_softmax(srv):
    """Greedy completions with logprobs=3 (non-streamed and streamed) and chat with top_logprobs:
    every token's logprob and its top 3 equal log_softmax of transformers' fp32 logits at that
    position; the greedy token is the top one; without the fields, logprobs is null."""
    client, engine, ckpt = srv
    prompt = [9707, 11, 1879, 0, 220, 17, 10, 17]
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 3, "ignore_eos": True,
            "return_token_ids": True}
    c = client.post("/v1/completions", json=body).json()["choices"][0]
    out = c["token_ids"]
    lp = _hf_logprobs(ckpt, prompt + out)
    tok = engine.tokenizer
    want = lp[len(prompt) - 1: len(prompt) - 1 + len(out)]
    L = c["logprobs"]
    assert L["tokens"] == [tok.decode([i]) for i in out]
    for k, t in enumerate(out):
        assert abs(L["token_logprobs"][k] - float(want[k, t])) < 1e-4
        top = want[k].topk(3)
        assert list(L["top_logprobs"][k].keys()) == [tok.decode([i]) for i in top.indices.tolist()]
        assert list(L["top_logprobs"][k].values()) == pytest.approx(top.values.tolist(), abs=1e-4)
        assert t == int(top.indices[0])                                     # greedy
    assert L["text_offset"] == [sum(len(x) for x in L["tokens"][:k]) for k in range(len(out))]
    # streamed: the chunks' logprobs put together are the same
    chunks = sse(client, "/v1/completions", {k: v for k, v in body.items() if k != "return_token_ids"})
    parts = [ch["choices"][0]["logprobs"] for ch in chunks if ch["choices"] and ch["choices"][0]["logprobs"]]
    assert sum((p["token_logprobs"] for p in parts), []) == pytest.approx(L["token_logprobs"], abs=1e-6)
    assert sum((p["text_offset"] for p in parts), []) == L["text_offset"]
    # chat: OpenAI's content list, thinking and answer tokens alike
    r = chat(client, max_tokens=8, max_thinking_tokens=3, logprobs=True, top_logprobs=2, return_token_ids=True)
    ch = r.json()["choices"][0]
    ids = ch["token_ids"]
    prompt_ids = client.post("/tokenize", json={"messages": CHAT}).json()["tokens"]
    lp = _hf_logprobs(ckpt, prompt_ids + ids)
    content = ch["logprobs"]["content"]
    assert len(content) == len(ids)
    for k, (t, e) in enumerate(zip(ids, content)):
        row = lp[len(prompt_ids) - 1 + k]
        assert e["token"] == tok.decode([t]) and abs(e["logprob"] - float(row[t])) < 1e-4   # forced tokens too
        assert [x["logprob"] for x in e["top_logprobs"]] == pytest.approx(row.topk(2).values.tolist(), abs=1e-4)
        assert e["bytes"] == list(e["token"].encode())
    streamed = sse(client, "/v1/chat/completions", {"messages": CHAT, "temperature": 0, "max_tokens": 8,
                                                    "max_thinking_tokens": 3, "logprobs": True, "top_logprobs": 2})
    got = sum((c["choices"][0]["logprobs"]["content"] for c in streamed
               if c["choices"] and c["choices"][0]["logprobs"]), [])
    assert [e["logprob"] for e in got] == pytest.approx([e["logprob"] for e in content], abs=1e-6)
    # off unless asked; bad values named
    assert chat(client, max_tokens=2).json()["choices"][0]["logprobs"] is None
    for kw, param in [({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                      ({"logprobs": 3}, "logprobs")]:
        r = chat(client, max_tokens=2, **kw)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    z = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "logprobs": 0}).json()["choices"][0]
    assert len(z["logprobs"]["token_logprobs"]) == 2 and z["logprobs"]["top_logprobs"] == [{}, {}]
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1, "logprobs": 21})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"


# ----------------------------------------------------------------------------- /metrics
def _scrape(client) -> dict:
    """{(sample name, frozenset(labels)): value} via prometheus_client's parser (which raises on a
    malformed exposition); also checks each family's type."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out, types = {}, {}
    for fam in prom.text_string_to_metric_families(r.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset((k, v) for k, v in s.labels.items() if k != "model_name"))] = s.value
    assert types["s1:time_to_first_token_seconds"] == "histogram"
    assert types["s1:num_requests_running"] == "gauge"
    assert types["s1:request_success"] == types["s1:wait_extensions"] == "counter"
    return out


def _v(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def test_metrics_parse_and_move(srv):
    client, engine, _ = srv
    before = _scrape(client)
    # 2 requests: one thinks with a cap and 2 "Wait"s (ends thinking only at the cap or after the waits)
    a = chat(client, max_tokens=24, max_thinking_tokens=6, num_wait=2, min_thinking_tokens=0).json()
    b = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 5, "ignore_eos": True,
                                             "temperature": 0}).json()
    after = _scrape(client)

    def d(name, **lab):
        return _v(after, name, **lab) - _v(before, name, **lab)

    assert d("s1:request_success_total", finished_reason="length") + d("s1:request_success_total",
                                                                      finished_reason="stop") == 2
    assert d("s1:time_to_first_token_seconds_count") == 2 and d("s1:e2e_request_latency_seconds_count") == 2
    n_out = a["usage"]["completion_tokens"] + b["usage"]["completion_tokens"]
    assert d("s1:generation_tokens_total") == n_out
    assert d("s1:request_generation_tokens_sum") == n_out
    assert d("s1:inter_token_latency_seconds_count") == n_out - 2
    assert d("s1:prompt_tokens_total") == a["usage"]["prompt_tokens"] + b["usage"]["prompt_tokens"]
    assert d("s1:thinking_tokens_total") == a["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert d("s1:time_to_first_token_seconds_sum") > 0
    assert _v(after, "s1:time_to_first_token_seconds_bucket", le="+Inf") == _v(after,
                                                                                "s1:time_to_first_token_seconds_count")
    # budget forcing: the request spends its 6 thinking tokens (random weights do not end thinking
    # by themselves on this prompt) -> one forced end (Wait counts: test_metrics_events)
    assert d("s1:thinking_forced_end_total") == 1
    assert _v(after, "s1:num_requests_running") == 0 and _v(after, "s1:num_requests_waiting") == 0
    assert _v(after, "s1:kv_cache_pages_free") == _v(after, "s1:kv_cache_pages_total") == engine.num_pages
    assert _v(after, "s1:kv_cache_usage_perc") == 0.0
    assert d("s1:prefix_cache_queries_total") == d("s1:prompt_tokens_total")
    # the same chat prompt again: its full pages come from the prefix cache
    chat(client, max_tokens=2)
    again = _scrape(client)
    assert _v(again, "s1:prefix_cache_hits_total") > _v(after, "s1:prefix_cache_hits_total")
    assert 0 < _v(again, "s1:prefix_cache_hit_rate") <= 1


def test_metrics_events():
    """Metrics on fixed events: histogram buckets (cumulative, le inclusive), TTFT / ITL / TPOT /
    E2E from the stream's times, the budget-forcing counters from the final output."""
    import types

    from s1.infer.request import GenerationOutput
    from s1.serve.metrics import Metrics
    m = Metrics("x")
    s = types.SimpleNamespace(t_submit=0.0, t_first=None, t_last=None)     # times exact in binary
    m.on_tokens(s, 1, 0.5)           # ttft 0.5
    m.on_tokens(s, 1, 0.625)         # itl 0.125
    m.on_tokens(s, 2, 1.0)           # itl 0.1875 twice
    out = GenerationOutput(prompt="", thinking="", answer="", text="", output_token_ids=[1, 2, 3, 4],
                           num_thinking_tokens=3, num_waits_used=2, finish_reason="stop",
                           prompt_token_ids=[5] * 7, max_thinking_tokens=3)
    m.on_finish(s, out, 1.5)
    m.on_finish(types.SimpleNamespace(t_submit=1.0, t_first=None, t_last=None),
                GenerationOutput(prompt="", thinking="", answer="", text="", output_token_ids=[],
                                 num_thinking_tokens=0, num_waits_used=0, finish_reason="abort"), 1.25)
    fams = {f.name: f for f in prom.text_string_to_metric_families(m.render({"num_requests_running": 0}, {}))}

    def val(fam, name, **lab):
        return next(s.value for s in fams[fam].samples if s.name == name
                    and all(s.labels.get(k) == v for k, v in lab.items()))
    assert val("s1:time_to_first_token_seconds", "s1:time_to_first_token_seconds_sum") == 0.5
    assert val("s1:time_to_first_token_seconds", "s1:time_to_first_token_seconds_bucket", le="0.5") == 1
    assert val("s1:time_to_first_token_seconds", "s1:time_to_first_token_seconds_bucket", le="0.25") == 0
    itl = "s1:inter_token_latency_seconds"
    assert val(itl, itl + "_count") == 3 and val(itl, itl + "_sum") == pytest.approx(0.5)
    assert val(itl, itl + "_bucket", le="0.1") == 0 and val(itl, itl + "_bucket", le="0.15") == 1
    assert val(itl, itl + "_bucket", le="0.2") == 3 and val(itl, itl + "_bucket", le="+Inf") == 3
    tp = "s1:request_time_per_output_token_seconds"
    assert val(tp, tp + "_sum") == pytest.approx(0.5 / 3) and val(tp, tp + "_count") == 1
    e2e = "s1:e2e_request_latency_seconds"
    assert val(e2e, e2e + "_sum") == pytest.approx(1.75) and val(e2e, e2e + "_count") == 2
    assert val("s1:request_prompt_tokens", "s1:request_prompt_tokens_sum") == 7
    assert val("s1:request_success", "s1:request_success_total", finished_reason="stop") == 1
    assert val("s1:request_success", "s1:request_success_total", finished_reason="abort") == 1
    assert val("s1:wait_extensions", "s1:wait_extensions_total") == 2
    assert val("s1:thinking_tokens", "s1:thinking_tokens_total") == 3
    assert val("s1:thinking_forced_end", "s1:thinking_forced_end_total") == 1
