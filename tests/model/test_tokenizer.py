"""The Qwen2.5 tokenizer and the s1 rendering (s1/model/tokenizer.py); checkpoint chat templates:
rendered as transformers renders them, and for Qwen2.5's template exactly the built-in s1 prompt."""
import json
import shutil

import pytest

from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT, THINK_START, Tokenizer

SEP = "\n__ggml_vocab_test__\n"


@pytest.fixture(scope="module")
def tok(request):
    from tests.conftest import require_shared_data
    return Tokenizer.from_pretrained(require_shared_data() / "qwen2.5-tokenizer")


def test_reference_vectors(tok, qwen_tokenizer_dir):
    inputs = (qwen_tokenizer_dir / "vectors" / "inputs.txt").read_text(encoding="utf-8").split(SEP)
    expected = (qwen_tokenizer_dir / "vectors" / "expected_ids.txt").read_text().split("\n")
    assert len(inputs) == len(expected) == 47
    bad = [i for i, (s, e) in enumerate(zip(inputs, expected)) if tok.encode(s) != [int(x) for x in e.split()]]
    assert not bad, f"{len(bad)} of 47 vectors differ, first: {inputs[bad[0]]!r}"
    # decoding inverts encoding on every vector
    assert all(tok.decode(tok.encode(s)) == s for s in inputs)


def test_special_ids_resolved_by_name(tok):
    assert tok.token_id("<|im_start|>") == 151644
    assert tok.token_id("<|im_end|>") == tok.eos_id == 151645
    assert tok.token_id("<|endoftext|>") == tok.pad_id == 151643
    assert tok.token_id("<|fim_pad|>") == 151662
    assert tok.encode("think") == [26865] and tok.encode("Wait") == [14190] and tok.encode("\n") == [198]
    assert tok.vocab_size == 151665
    with pytest.raises(KeyError, match="not_a_token"):
        tok.token_id("<not_a_token>")


Q, THINK, ATT = "What is $1+1$?", "One plus one.\nThat is 2.", "$\\boxed{2}$"


def test_render_example_reference_string(tok):
    expected = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\nWhat is $1+1$?<|im_end|>\n"
                "<|im_start|>assistant\n<|im_start|>think\nOne plus one.\nThat is 2.\n<|im_start|>answer\n"
                "Answer: $\\boxed{2}$<|im_end|>\n")
    assert tok.render_example(Q, THINK, ATT) == expected
    # "Answer: " only when the attempt lacks it
    assert tok.render_example(Q, THINK, "Answer: 2").count("Answer:") == 1


def test_rendering_matches_official_chat_template(tok, qwen_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    assistant = f"<|im_start|>think\n{THINK}\n<|im_start|>answer\nAnswer: {ATT}"
    full = hf.apply_chat_template([{"role": "user", "content": Q}, {"role": "assistant", "content": assistant}],
                                  tokenize=False)
    assert tok.render_example(Q, THINK, ATT) == full
    prompt = hf.apply_chat_template([{"role": "user", "content": Q}], tokenize=False, add_generation_prompt=True)
    # s1's evaluation prompt ends at "think": the model writes the newline (a thinking token)
    assert tok.render_prompt(Q) == prompt + "<|im_start|>think"
    assert DEFAULT_SYSTEM_PROMPT in prompt


def test_loss_mask_covers_exactly_the_assistant_part(tok):
    ids, mask = tok.encode_example(Q, THINK, ATT)
    assert ids == tok.encode(tok.render_example(Q, THINK, ATT))
    trained = [i for i, m in zip(ids, mask) if m]
    masked_prefix = [i for i, m in zip(ids, mask) if not m]
    assert tok.decode(trained) == f"<|im_start|>think\n{THINK}\n<|im_start|>answer\nAnswer: {ATT}<|im_end|>"
    # the mask is one contiguous run: prompt (through "assistant\n") masked, final "\n" masked
    first, last = mask.index(True), len(mask) - 1 - mask[::-1].index(True)
    assert all(mask[first:last + 1]) and not any(mask[:first]) and not any(mask[last + 1:])
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert ids[last] == tok.eos_id and tok.decode(ids[last + 1:]) == "\n"
    assert len(masked_prefix) == first + 1


# ----------------------------------------------------------------------------- chat templates
QUESTIONS = ["What is 2+2?", "Line one\nline two  ", "ünïcode ✓ and {{ braces }} and {% tags %}", ""]


def builtin(tok: Tokenizer, question: str, system=None) -> str:
    """The built-in s1 format: the same tokenizer with its template switched off."""
    bare = Tokenizer(tok._tok, {k: v for k, v in tok.config.items() if k != "chat_template"}, chat_template="")
    assert not bare.chat_template
    return bare.render_prompt(question, system)


def test_qwen_template_equals_the_builtin_s1_prompt(qwen_tokenizer_dir):
    tok = Tokenizer.from_pretrained(qwen_tokenizer_dir)
    assert tok.chat_template and "im_start" in tok.chat_template
    for q in QUESTIONS:
        for system in (None, DEFAULT_SYSTEM_PROMPT, "You are terse.", ""):
            got = tok.render_prompt(q, system)
            assert got == builtin(tok, q, system), (q, system)
            assert got.endswith("<|im_start|>assistant\n" + THINK_START)
    assert tok.render_prompt("q").startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n")
    # Tokenizer.system_prompt (what --system-prompt sets) is the default of render_prompt
    tok.system_prompt = "S"
    assert tok.render_prompt("q") == builtin(tok, "q", "S") and tok.render_prompt("q", "T") == builtin(tok, "q", "T")


def test_template_from_tokenizer_config_and_the_jinja_file_wins(qwen_tokenizer_dir, tmp_path):
    d = tmp_path / "tok"
    d.mkdir()
    shutil.copy(qwen_tokenizer_dir / "tokenizer.json", d)
    cfg = json.loads((qwen_tokenizer_dir / "tokenizer_config.json").read_text())
    assert cfg.get("chat_template")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer.from_pretrained(d)                          # template from tokenizer_config.json
    assert tok.render_prompt("q") == builtin(tok, "q")
    (d / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    tok = Tokenizer.from_pretrained(d)                          # the .jinja file wins (as in transformers)
    assert tok.render_prompt("q") == "[user]q[assistant]" + THINK_START
    assert tok.render_prompt("q", "sys") == "[system]sys[user]q[assistant]" + THINK_START
    # HF's list-of-named-templates form
    cfg["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink()
    tok = Tokenizer.from_pretrained(d)
    assert tok.render_prompt("q") == "D<|im_end|>" + THINK_START  # special tokens are template variables


def test_no_template_uses_the_builtin_format(qwen_tokenizer_dir, tmp_path):
    d = tmp_path / "tok"
    d.mkdir()
    shutil.copy(qwen_tokenizer_dir / "tokenizer.json", d)
    tok = Tokenizer.from_pretrained(d)
    assert tok.chat_template is None
    assert tok.render_prompt("q") == (f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
                                      f"q<|im_end|>\n<|im_start|>assistant\n{THINK_START}")
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "q"}])
    # a Tokenizer built without __init__ (s1/pipelines/toy.py does) renders the built-in format too
    assert Tokenizer.__new__(Tokenizer).render_prompt("q") == tok.render_prompt("q")


def test_same_rendering_as_transformers(qwen_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    tok = Tokenizer.from_pretrained(qwen_tokenizer_dir)
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    convs += [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
              [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]]
    for msgs in convs:
        for gen in (True, False):
            assert tok.apply_chat_template(msgs, add_generation_prompt=gen) == \
                hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen), (msgs, gen)


def test_template_errors_surface_as_template_errors(qwen_tokenizer_dir, tmp_path):
    import jinja2
    d = tmp_path / "tok"
    d.mkdir()
    shutil.copy(qwen_tokenizer_dir / "tokenizer.json", d)
    (d / "chat_template.jinja").write_text("{{ raise_exception('only user turns') }}")
    with pytest.raises(jinja2.exceptions.TemplateError, match="only user turns"):
        Tokenizer.from_pretrained(d).render_prompt("q")
