"""The thinking format (s1/model/thinking.py): detection from the tokenizer, a Qwen3-style chat
template with enable_thinking on and off, overrides, the token ids the engine derives from it,
and training examples rendered in the <think> template. The <think> tokenizer is a stand-in
(tests/helpers.py make_think_tokenizer): Qwen2.5's with <think> / </think> added."""
from __future__ import annotations

import pytest

from s1.model import thinking
from s1.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def s1tok(request):
    from tests.conftest import require_shared_data
    return Tokenizer.from_pretrained(require_shared_data() / "qwen2.5-tokenizer")


@pytest.fixture(scope="module")
def ttok(request):
    d = request.getfixturevalue("think_tokenizer_dir")
    return Tokenizer.from_pretrained(d)


def test_detection(s1tok, ttok):
    assert s1tok.thinking_format == thinking.S1
    f = ttok.thinking_format
    assert f.name == "think" and f.start == "<think>\n" and f.end == "</think>"
    assert f.forced_end == "\n</think>\n\n"                 # vLLM's reasoning_end_str default
    assert thinking.S1.forced_end == "\n<|im_start|>answer\nFinal Answer:"
    assert ttok.encode("<think>") == [151665] and ttok.encode("</think>") == [151666]


def test_qwen3_style_chat_template_enable_thinking_on_and_off(ttok):
    on = ttok.render_prompt("What is 2+2?")
    off = ttok.render_prompt("What is 2+2?", thinking=False)
    head = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert on == head + "<think>\n"                            # the thinking start opens thinking
    assert off == head + "<think>\n\n</think>\n\n"             # Qwen3's empty block: plain generation
    # the template's own rendering, as transformers calls it
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    assert ttok.apply_chat_template(msgs) == head
    assert ttok.apply_chat_template(msgs, enable_thinking=True) == head
    assert ttok.apply_chat_template(msgs, enable_thinking=False) == off
    # a template that opens <think> itself (R1-distill): the start is not doubled
    t2 = Tokenizer.from_pretrained(ttok.path)
    t2.chat_template = ttok.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    t2._compiled = None
    assert t2.render_prompt("q").endswith("assistant\n<think>\n") and t2.render_prompt("q").count("<think>") == 1


def test_overrides_and_errors(ttok, s1tok):
    f = thinking.resolve(ttok, "auto", forced_end="\n</think>\n\nFinal Answer:")
    assert f.forced_end == "\n</think>\n\nFinal Answer:"
    assert thinking.resolve(ttok, "think", answer_prefix="\n\nAnswer:").forced_end == "\n</think>\n\nAnswer:"
    assert thinking.resolve(ttok, "s1") == thinking.S1             # forced s1 format on a <think> tokenizer
    with pytest.raises(ValueError, match="unknown thinking format"):
        thinking.resolve(ttok, "r1")
    with pytest.raises(ValueError, match="start must be a non-empty"):
        thinking.resolve(s1tok, "s1", start="")
    with pytest.raises(ValueError, match="one or two are supported"):
        thinking.resolve(s1tok, "s1", stops=("<|im_start|>answer\n",)).stop_rules(s1tok)


def test_engine_token_ids(s1tok, ttok):
    from s1.infer.budget import SpecialTokens
    sp = SpecialTokens.from_tokenizer(s1tok)
    # s1: <|im_start|> and <|im_end|> dropped, <|endoftext|> kept (vLLM keeps EOS ids in s1's loop)
    assert sp.end_rules == [(151644, -1, 0), (151645, -1, 0), (151643, -1, 1)]
    assert sorted(sp.think_end_ids) == [151643, 151644, 151645] and sp.delimiter_ids == [151644, 9217]
    assert sp.answer_stop_ids == [151645, 151643]
    tp = SpecialTokens.from_tokenizer(ttok)
    assert tp.end_rules == [(151666, -1, 0), (151645, -1, 0), (151643, -1, 1)] and tp.delimiter_ids == [151666]
    st = SpecialTokens.from_tokenizer(s1tok, thinking.S1_STEPS)   # s1's step-conditional "<|im_start|>0"
    assert st.end_rules[0] == (15, 151644, 0) and st.has_pair_end and 15 not in st.think_end_ids
    with pytest.raises(ValueError, match="two-token end"):
        SpecialTokens.from_tokenizer(s1tok, thinking.S1_STEPS.with_overrides(end="</s>answer"))


def test_training_example_in_the_think_template(ttok, s1tok):
    text = ttok.render_example("Q?", "let me think", "The answer is \\boxed{4}.")
    assert text == ("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n<think>\nlet me think\n</think>\n\n"
                    "The answer is \\boxed{4}.<|im_end|>\n")
    ids, mask = ttok.encode_example("Q?", "let me think", "The answer is \\boxed{4}.")
    trained = ttok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "<think>\nlet me think\n</think>\n\nThe answer is \\boxed{4}.<|im_end|>"
    # the s1 rendering is unchanged
    assert s1tok.render_example("Q?", "t", "4").endswith("<|im_start|>think\nt\n<|im_start|>answer\nAnswer: 4<|im_end|>\n")
