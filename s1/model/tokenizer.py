"""Qwen2.5 tokenizer (HF `tokenizers` file) and the s1 prompt / training-example format.

s1 format (as s1's training and evaluation code write it), newlines literal:
    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
    <|im_start|>assistant\n<|im_start|>think\n{thinking}\n<|im_start|>answer\nAnswer: {attempt}<|im_end|>\n
"Answer: " is prepended only when the attempt does not already contain "Answer:". The loss covers
the assistant part: every token after "<|im_start|>assistant\n" through the final <|im_end|>.
Special-token ids are resolved by name from the tokenizer file, never hard-coded.

Chat template: when the tokenizer folder has one (chat_template.jinja, or tokenizer_config.json's
"chat_template"), `render_prompt` renders the conversation with it, as transformers'
`apply_chat_template(..., add_generation_prompt=True)` does (jinja2 sandbox, trim_blocks,
lstrip_blocks, tojson, raise_exception), then appends the thinking start; for Qwen2.5's template
that is exactly the built-in s1 format above (tests/model/test_tokenizer.py). Without a template the
built-in format is used. A system prompt: the `system` argument, else `Tokenizer.system_prompt`
(set by `--system-prompt`), else the template's own default (Qwen's for the built-in format).
"""
from __future__ import annotations

import json
import os
import shutil

from tokenizers import Tokenizer as _HFTokenizer

DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# The s1 format strings, in one place. Inference prompts end with THINK_START (no newline: the
# model writes it, and it counts as a thinking token, as in s1's evaluation); training examples
# render "<|im_start|>think\n{thinking}\n<|im_start|>answer\n{attempt}".
THINK_START = "<|im_start|>think"
ANSWER_DELIMITER = "<|im_start|>answer"          # replaces a natural end of thinking
FORCED_END = "\n<|im_start|>answer\nFinal Answer:"  # forced at the thinking cap; the "\n" only when
                                                 # the thinking does not already end with one


class Tokenizer:
    # class-level defaults: a Tokenizer made without __init__ (s1/pipelines/toy.py renders examples
    # that way) uses the built-in s1 format
    chat_template: str | None = None
    system_prompt: str | None = None
    _compiled = None
    _thinking_format = None

    @property
    def thinking_format(self):
        """The checkpoint's ThinkingFormat (s1/model/thinking.py): detected from the vocabulary
        unless set (the CLIs' --thinking-format / --thinking-start / ... flags)."""
        if self._thinking_format is None:
            from s1.model import thinking
            self._thinking_format = thinking.detect(self) if hasattr(self, "_tok") else thinking.S1
        return self._thinking_format

    @thinking_format.setter
    def thinking_format(self, fmt) -> None:
        if fmt is not None:
            fmt.validate()
        self._thinking_format = fmt

    def __init__(self, tok: _HFTokenizer, config: dict | None = None, path: str | None = None,
                 chat_template: str | None = None):
        self._tok = tok
        self.config = config or {}
        self.path = path
        self.chat_template = chat_template if chat_template is not None else _template_of(self.config)
        self.system_prompt: str | None = None   # default system prompt of render_prompt (None: the format's own)
        self._compiled = None
        self.eos_token = self._token_str(self.config.get("eos_token")) or IM_END
        self.pad_token = self._token_str(self.config.get("pad_token")) or ENDOFTEXT
        self.eos_id = self.token_id(self.eos_token)
        self.pad_id = self.token_id(self.pad_token)

    @staticmethod
    def _token_str(t):
        return t.get("content") if isinstance(t, dict) else t

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        """From a folder with tokenizer.json (+ tokenizer_config.json, chat_template.jinja), or a
        Hugging Face Hub id in the local HF cache (s1/common/hub.py)."""
        from s1.common.hub import resolve_model_path
        path = resolve_model_path(path, what="tokenizer")
        tj = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tj):
            raise FileNotFoundError(f"no tokenizer.json in {path!r}")
        tok = _HFTokenizer.from_file(tj)
        cfg = {}
        tc = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(tc):
            with open(tc) as f:
                cfg = json.load(f)
        template = None
        tf = os.path.join(path, "chat_template.jinja")
        if os.path.exists(tf):   # transformers: the .jinja file wins over tokenizer_config.json
            with open(tf, encoding="utf-8") as f:
                template = f.read()
        return cls(tok, cfg, path, chat_template=template)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        os.makedirs(path, exist_ok=True)
        self._tok.save(os.path.join(path, "tokenizer.json"))
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(self.config or {"eos_token": self.eos_token, "pad_token": self.pad_token}, f, indent=2)
        if self.path and os.path.exists(os.path.join(self.path, "chat_template.jinja")):
            shutil.copy(os.path.join(self.path, "chat_template.jinja"), path)

    # ------------------------------------------------------------------ basics
    @property
    def vocab_size(self) -> int:
        """Number of real tokens (base + added); the model's embedding table may be larger."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, name: str) -> int:
        i = self._tok.token_to_id(name)
        if i is None:
            raise KeyError(f"token {name!r} is not in the tokenizer vocabulary")
        return i

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ chat template
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """Render `messages` with the tokenizer's chat template, as transformers does; extra
        keyword arguments are template variables (Qwen3's `enable_thinking`)."""
        if not self.chat_template:
            raise ValueError(f"tokenizer {self.path or ''} has no chat template".replace("  ", " "))
        if self._compiled is None:
            self._compiled = _compile_template(self.chat_template)
        specials = {k: self._token_str(v) for k, v in self.config.items()
                    if k in ("bos_token", "eos_token", "pad_token", "unk_token") and v is not None}
        return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **specials, **kwargs)

    # ------------------------------------------------------------------ s1 format
    def render_prompt(self, question: str, system: str | None = None, *, thinking: bool = True,
                      start: str | None = None) -> str:
        """The s1 inference prompt: chat template with the user question, then the thinking start
        (the thinking format's, or `start`), unless the template already ends with it.

        With the tokenizer's own chat template when it has one (no system message unless one is
        given: the template supplies its default), else the built-in s1 format. thinking=False:
        the template with enable_thinking=False and no thinking start (plain generation; for a
        Qwen3 template the generation prompt then holds an empty <think></think> block)."""
        system = self.system_prompt if system is None else system
        if start is None:
            start = self.thinking_format.start
        if self.chat_template:
            messages = ([{"role": "system", "content": system}] if system is not None else [])
            messages.append({"role": "user", "content": question})
            kw = {} if thinking else {"enable_thinking": False}
            text = self.apply_chat_template(messages, add_generation_prompt=True, **kw)
        else:
            system = DEFAULT_SYSTEM_PROMPT if system is None else system
            text = f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
        if not thinking or text.endswith(start):
            return text
        return text + start

    def newline_table(self) -> bytes:
        """One byte per id: 1 when the token's text ends with "\n" (s1's cap rule asks whether the
        thinking already ends with a newline). Computed once per tokenizer."""
        if getattr(self, "_newline_table", None) is None:
            n = self.vocab_size
            texts = self._tok.decode_batch([[i] for i in range(n)], skip_special_tokens=False)
            self._newline_table = bytes(1 if t.endswith("\n") else 0 for t in texts)
        return self._newline_table

    @staticmethod
    def format_attempt(attempt: str) -> str:
        return attempt if "Answer:" in attempt else "Answer: " + attempt

    def render_example(self, question: str, thinking: str, attempt: str, system: str | None = None) -> str:
        """One training example in the tokenizer's thinking format (s1: the module docstring's;
        think: "...<think>\n{thinking}\n</think>\n\n{attempt}<eos>\n")."""
        fmt = self.thinking_format
        if fmt.name == "s1" and fmt.start == THINK_START and fmt.end == ANSWER_DELIMITER:
            return (self.render_prompt(question, system) + f"\n{thinking}\n{ANSWER_DELIMITER}\n"
                    + f"{self.format_attempt(attempt)}{IM_END}\n")
        eot = IM_END if fmt.name == "s1" else self.eos_token
        return self.render_prompt(question, system) + fmt.training_body(thinking, attempt, eot)

    def _assistant_start(self, question: str, system: str | None) -> int:
        """Character offset of the assistant turn's body (after "<|im_start|>assistant\n"): the
        prompt without the thinking start."""
        return len(self.render_prompt(question, system)) - len(self.thinking_format.start)

    def encode_example(self, question: str, thinking: str, attempt: str,
                       system: str | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered example and the loss mask (True = trained token).

        The mask is derived from character offsets: a token is trained iff it lies entirely after
        "<|im_start|>assistant\n" and ends at or before the final end-of-turn token.
        """
        text = self.render_example(question, thinking, attempt, system)
        start = self._assistant_start(question, system)
        eot = IM_END if self.thinking_format.name == "s1" else self.eos_token
        end = text.rindex(eot) + len(eot)
        enc = self._tok.encode(text, add_special_tokens=False)
        mask = [s >= start and e <= end for s, e in enc.offsets]
        return enc.ids, mask


def _template_of(config: dict) -> str | None:
    """tokenizer_config.json's chat_template: a string, or HF's list of named templates."""
    t = config.get("chat_template")
    if isinstance(t, list):
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    return t if isinstance(t, str) and t.strip() else None


def _compile_template(source: str):
    """jinja2 as transformers compiles chat templates (utils/chat_template_utils.py)."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        import datetime
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)
