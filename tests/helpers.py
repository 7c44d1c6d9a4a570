"""Plain helpers shared by test modules of several folders (fixtures live in conftest.py).

- the engine tests' oracle and set-up (tests/infer/, tests/bench/): a small LLM over a model and
  tokenizer, random prompts, naive full-recompute greedy decoding, the context-sensitive tiny model;
- `in_interpreter`: run a check in Triton's CPU interpreter (a child process when this one was
  started without TRITON_INTERPRET=1);
- `WordTok`: a token counter (one token per word) for the tests of trace rewrites and renderings;
- the <think> tokenizer stand-in (`make_think_tokenizer`) and `PlanModel`, a model that writes a
  planned token sequence (the thinking-format tests).
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import ROOT

VOCAB = 151936  # Qwen2.5 embedding rows (padded beyond the tokenizer's 151,665 tokens)
QUESTION = "What is 2+2?"
THINK_END_NAMES = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def make_llm(model, tok, **kw):
    from s1.infer import LLM
    base = dict(model=model, tokenizer=tok, page_size=4, num_pages=256, max_model_len=512)
    base.update(kw)
    return LLM(**base)


def prompts_of(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 150000, (n,), generator=g).tolist() for n in lengths]


@torch.no_grad()
def naive_greedy(model, ids, n, vocab_size):
    ids = list(ids)
    out = []
    for _ in range(n):
        logits = model(torch.tensor(ids))[-1]
        t = int(logits[:vocab_size].argmax())
        out.append(t)
        ids.append(t)
    return out


def think_end_ids(tok):
    return {tok.token_id(n) for n in THINK_END_NAMES}


def context_model(seed: int):
    """(tiny random Qwen2 with the real 151,936 vocabulary, Qwen2.5 tokenizer) whose attention and
    MLP weights are scaled up so that the context decides the next token (with the default init
    the model just repeats its input token, and an engine comparison would prove nothing)."""
    from bench.engine_checks import tiny_model
    from s1.model.tokenizer import Tokenizer
    from tests.conftest import SHARED_DATA
    tok = Tokenizer.from_pretrained(SHARED_DATA / "qwen2.5-tokenizer")
    m = tiny_model(torch, "cpu", 10.0, 2, 64, seed, intermediate=96, max_positions=128, embed_scale=4.0)
    return m, tok


def in_interpreter(check, *args: str) -> None:
    """Run `check(*args)` (a module-level function of a test module) in Triton's interpreter: here
    when TRITON_INTERPRET=1 is set, else in a child process with it set (it must be set before
    Triton compiles the kernels)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        check(*args)
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = f"import sys, {check.__module__} as m; m.{check.__name__}(*sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"{check.__name__}{args} failed in the interpreter:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    print(r.stdout)


class WordTok:
    """Tokenizer stub: one token per whitespace-separated word (newlines cost nothing). Not an engine
    tokenizer (encode only): the stand-in for the engine is bench/standin.py."""

    def encode(self, text):
        return [0] * len(text.split())


def assert_imports_without_torch(modules: list[str], then: str = "") -> None:
    """Import `modules` (and run the statement `then`) in a fresh interpreter; fail if torch or the
    engine (s1.infer.llm) got imported on the way."""
    code = (f"import sys; import {', '.join(modules)}; {then or 'pass'}; "
            "bad = [m for m in ('torch', 's1.infer.llm') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------- a <think> tokenizer stand-in
# No real Qwen3 / R1-distill tokenizer is on this machine: the stand-in is Qwen2.5's tokenizer with
# <think> and </think> added as (non-special) added tokens, as Qwen3 has them, and a chat template
# written here that behaves like Qwen3's for plain conversations: the generation prompt is
# "<|im_start|>assistant\n", followed by an empty "<think>\n\n</think>\n\n" block when
# enable_thinking is false; no default system prompt.
QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}")


def make_think_tokenizer(src, out_dir) -> str:
    """Write the <think> stand-in tokenizer (src: the Qwen2.5 tokenizer folder) to out_dir."""
    import json
    import pathlib

    from tokenizers import AddedToken, Tokenizer as HFTokenizer
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = HFTokenizer.from_file(str(pathlib.Path(src) / "tokenizer.json"))
    t.add_tokens([AddedToken("<think>", special=False, normalized=False),
                  AddedToken("</think>", special=False, normalized=False)])
    t.save(str(out / "tokenizer.json"))
    cfg = json.loads((pathlib.Path(src) / "tokenizer_config.json").read_text())
    cfg.pop("added_tokens_decoder", None)
    cfg["chat_template"] = QWEN3_STYLE_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    return str(out)


# ----------------------------------------------------------------- a model that writes a plan
class PlanModel(torch.nn.Module):
    """Logits that put plan[k] on top for the k-th token after a prompt of `prompt_len` tokens (read
    from the positions); a stand-in for Qwen2ForCausalLM (the engine only needs config and dtype)."""

    def __init__(self, plan, prompt_len):
        super().__init__()
        from s1.model.config import Qwen2Config
        self.config = Qwen2Config(vocab_size=VOCAB, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                  torch_dtype="float32")
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.plan, self.prompt_len = list(plan), prompt_len

    def forward(self, input_ids, positions, kv_cache=None, logits_indices=None, **kw):
        rows = range(input_ids.shape[0]) if logits_indices is None else logits_indices.tolist()
        out = torch.zeros(len(rows), VOCAB)
        for i, r in enumerate(rows):
            k = int(positions[r]) + 1 - self.prompt_len
            out[i, self.plan[k] if 0 <= k < len(self.plan) else 0] = 10.0
        return out
