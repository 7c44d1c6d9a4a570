"""Checkpoint chat templates (s1/model/tokenizer.py): rendered as transformers renders them, and for
Qwen2.5's template exactly the built-in s1 prompt."""
import json
import shutil

import pytest

from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT, THINK_START, Tokenizer

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
