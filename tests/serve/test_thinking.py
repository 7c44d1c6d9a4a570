"""`s1 serve` for <think> models (DeepSeek-R1-distill, Qwen3): the reasoning split at </think>
(reasoning_content / content, streamed and not), the thinking budget's forced end, and Qwen3's
chat_template_kwargs.enable_thinking=false (plain generation). The tokenizer is the <think>
stand-in (tests/helpers.py make_think_tokenizer), the model writes a planned token sequence
(tests/helpers.py PlanModel)."""
from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def srv(think_tokenizer_dir):
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.model.tokenizer import Tokenizer
    from s1.serve.app import ServerSettings, build_app
    from tests._lib_helpers import serve_in_thread
    from tests.helpers import PlanModel
    tok = Tokenizer.from_pretrained(think_tokenizer_dir)
    prompt_len = len(tok.encode(tok.render_prompt("hi")))
    plan = tok.encode("Let me see") + [151666] + tok.encode("\n\nHello") + [151645]
    engine = LLMEngine(EngineConfig(device="cpu", page_size=16, num_pages=64, max_num_seqs=4, kernels="torch"),
                       model=PlanModel(plan, prompt_len), tokenizer=tok)
    app = build_app(engine, ServerSettings(served_model_name="think"))
    server, thread, port = serve_in_thread(app)
    yield dict(url=f"http://127.0.0.1:{port}/v1", tok=tok, plan=plan)
    server.should_exit = True
    thread.join(30)
    engine.close()


def _chat(srv, **extra):
    body = {"model": "think", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **extra}
    r = httpx.post(srv["url"] + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_reasoning_split_at_think_close(srv):
    r = _chat(srv)
    m = r["choices"][0]["message"]
    assert m["reasoning_content"] == "Let me see" and m["content"] == "Hello"
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    # streamed: the same texts
    body = {"model": "think", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "stream": True}
    reasoning = content = ""
    with httpx.stream("POST", srv["url"] + "/chat/completions", json=body, timeout=60) as s:
        import json
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for c in json.loads(line[6:])["choices"]:
                    reasoning += c["delta"].get("reasoning_content") or ""
                    content += c["delta"].get("content") or ""
    assert (reasoning, content) == ("Let me see", "Hello")


def test_thinking_budget_forces_the_think_end(srv):
    r = _chat(srv, max_thinking_tokens=2, return_token_ids=True)
    m = r["choices"][0]["message"]
    assert m["reasoning_content"] == "Let me" and "</think>" not in m["content"]
    ids = r["choices"][0]["token_ids"]
    assert ids[:5] == srv["tok"].encode("Let me") + srv["tok"].encode("\n</think>\n\n")   # "\n</think>\n\n"
    r = _chat(srv, max_thinking_tokens=2, answer_prefix="\n\nFinal Answer:", return_token_ids=True)
    assert r["choices"][0]["token_ids"][2:2 + 6] == srv["tok"].encode("\n</think>\n\nFinal Answer:")


def test_enable_thinking_false_is_plain_generation(srv):
    r = _chat(srv, chat_template_kwargs={"enable_thinking": False})
    m = r["choices"][0]["message"]
    # the prompt holds the empty <think></think> block (2 tokens longer): the model's plan goes on
    # from its third token, and nothing is thinking
    assert not m.get("reasoning_content") and m["content"] == srv["tok"].decode(srv["plan"][2:-1])
    bad = httpx.post(srv["url"] + "/chat/completions", json={
        "model": "think", "messages": [{"role": "user", "content": "hi"}],
        "chat_template_kwargs": {"enable_thinking": "no"}}, timeout=60)
    assert bad.status_code == 400 and "enable_thinking" in bad.text
