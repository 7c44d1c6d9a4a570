"""Qwen2.5 tokenizer (HF `tokenizers` file) and the s1 prompt / training-example format.

s1 format (s1-reference §1), newlines literal:
    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
    <|im_start|>assistant\n<|im_start|>think\n{thinking}\n<|im_start|>answer\nAnswer: {attempt}<|im_end|>\n
"Answer: " is prepended only when the attempt does not already contain "Answer:". The loss covers
the assistant part: every token after "<|im_start|>assistant\n" through the final <|im_end|>.
Special-token ids are resolved by name from the tokenizer file, never hard-coded.
"""
from __future__ import annotations

import json
import os
import shutil

from tokenizers import Tokenizer as _HFTokenizer

DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_START = "<|im_start|>think\n"
ANSWER_START = "<|im_start|>answer\n"


class Tokenizer:
    def __init__(self, tok: _HFTokenizer, config: dict | None = None, path: str | None = None):
        self._tok = tok
        self.config = config or {}
        self.path = path
        self.eos_token = self._token_str(self.config.get("eos_token")) or IM_END
        self.pad_token = self._token_str(self.config.get("pad_token")) or ENDOFTEXT
        self.eos_id = self.token_id(self.eos_token)
        self.pad_id = self.token_id(self.pad_token)

    @staticmethod
    def _token_str(t):
        return t.get("content") if isinstance(t, dict) else t

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Tokenizer":
        path = os.fspath(path)
        tj = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tj):
            raise FileNotFoundError(f"no tokenizer.json in {path!r}")
        tok = _HFTokenizer.from_file(tj)
        cfg = {}
        tc = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(tc):
            with open(tc) as f:
                cfg = json.load(f)
        return cls(tok, cfg, path)

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

    # ------------------------------------------------------------------ s1 format
    def render_prompt(self, question: str, system: str | None = None) -> str:
        """The s1 inference prompt: chat template with the user question, then the thinking start."""
        system = DEFAULT_SYSTEM_PROMPT if system is None else system
        return (f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{question}{IM_END}\n"
                f"{IM_START}assistant\n{THINK_START}")

    @staticmethod
    def format_attempt(attempt: str) -> str:
        return attempt if "Answer:" in attempt else "Answer: " + attempt

    def render_example(self, question: str, thinking: str, attempt: str, system: str | None = None) -> str:
        return (self.render_prompt(question, system) + f"{thinking}\n{ANSWER_START}"
                + f"{self.format_attempt(attempt)}{IM_END}\n")

    def encode_example(self, question: str, thinking: str, attempt: str,
                       system: str | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered example and the loss mask (True = trained token).

        The mask is derived from character offsets: a token is trained iff it lies entirely after
        "<|im_start|>assistant\\n" and ends at or before the final <|im_end|>.
        """
        text = self.render_example(question, thinking, attempt, system)
        start = len(self.render_prompt(question, system)) - len(THINK_START)
        end = text.rindex(IM_END) + len(IM_END)
        enc = self._tok.encode(text, add_special_tokens=False)
        mask = [s >= start and e <= end for s, e in enc.offsets]
        return enc.ids, mask
