"""The thinking format of a checkpoint: how thinking starts and ends, in one object.

Two families, detected from the tokenizer (`detect`):
  s1   s1-32B / s1.1: the prompt ends with "<|im_start|>think" (the model writes the newline);
       thinking ends when the model writes <|im_start|> or <|im_end|> (s1's `until_thinking` and
       stop), a natural end is followed by "<|im_start|>answer", a forced end (the thinking cap)
       by "\\n<|im_start|>answer\\nFinal Answer:".
  think  DeepSeek-R1-Distill-Qwen and Qwen3: thinking between "<think>\\n" and "</think>"; a
       natural end keeps "</think>", a forced end is "\\n</think>\\n\\n" (vLLM's reasoning_end_str).
       Chosen when the tokenizer has both <think> and </think> as single tokens.
Budget forcing means the same in both (s1/infer/sampling.py): cap, minimum, extensions, natural
end; the leading "\\n" of a forced end only when the thinking does not already end with one.

Fields (all overridable: `with_overrides`, the CLIs' --thinking-* flags, the server's request fields):
  start          text appended to the chat-template prompt (skipped when the prompt already ends
                 with it, as R1-distill templates that open <think> themselves)
  end            the delimiter written after a natural end of thinking (s1's `thinking_end`)
  stops          end-of-thinking strings the model writes (s1's `until_thinking`); each is one
                 token, or two tokens (s1's step-conditional "<|im_start|>0": the second right after
                 the first, then `end` must start with the first). They are dropped from the context.
  answer_prefix  what follows `end` in the forced end (s1: "\\nFinal Answer:", think: "\\n\\n")
  forced_end     the forced end at the thinking cap; None: "\\n" + end + answer_prefix
End-of-sequence ids that are not stops (Qwen2.5's <|endoftext|>) also end a thinking round, but
stay in the context, as vLLM keeps them in s1's loop (`kept_end_names`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
FORMATS = ("auto", "s1", "think")
# s1's step-conditional run (its eval/commands.sh "Step-conditional control + budget forcing"):
# thinking_start=<|im_start|>, until_thinking=<|im_start|>0, thinking_end=<|im_start|>answer; the
# model writes "<|im_start|>N steps left\n" before every step and "<|im_start|>0 steps left" ends.
S1_STEP_START, S1_STEP_STOP = IM_START, IM_START + "0"


@dataclass(frozen=True)
class ThinkingFormat:
    name: str
    start: str
    end: str
    stops: tuple[str, ...]
    answer_prefix: str
    forced_end_text: str | None = None

    @property
    def forced_end(self) -> str:
        return self.forced_end_text if self.forced_end_text is not None else "\n" + self.end + self.answer_prefix

    def with_overrides(self, *, start=None, end=None, stops=None, forced_end=None, answer_prefix=None,
                       ) -> "ThinkingFormat":
        """A copy with the given fields replaced (None: keep). stops: a tuple or a comma-free list."""
        ch = {}
        if start is not None:
            ch["start"] = start
        if end is not None:
            ch["end"] = end
        if stops is not None:
            ch["stops"] = tuple(stops)
        if answer_prefix is not None:
            ch["answer_prefix"] = answer_prefix
        if forced_end is not None:
            ch["forced_end_text"] = forced_end
        if not ch:
            return self
        out = dataclasses.replace(self, **ch)
        out.validate()
        return out

    def validate(self) -> None:
        for f in ("start", "end"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v:
                raise ValueError(f"thinking format: {f} must be a non-empty string, got {v!r}")
        if not self.stops or not all(isinstance(s, str) and s for s in self.stops):
            raise ValueError(f"thinking format: stops must be non-empty strings, got {self.stops!r}")
        if not isinstance(self.forced_end, str) or not self.forced_end:
            raise ValueError(f"thinking format: forced end must be a non-empty string, got {self.forced_end!r}")

    def describe(self) -> dict:
        return dict(name=self.name, start=self.start, end=self.end, stops=list(self.stops),
                    forced_end=self.forced_end, answer_prefix=self.answer_prefix)

    # ---------------------------------------------------------------- token ids
    def stop_rules(self, tok) -> list[tuple[int, int]]:
        """(id, predecessor id or -1) per stop; ValueError when a stop is neither one token nor two."""
        out = []
        for s in self.stops:
            ids = tok.encode(s)
            if len(ids) == 1:
                out.append((ids[0], -1))
            elif len(ids) == 2:
                out.append((ids[1], ids[0]))
            else:
                raise ValueError(f"end-of-thinking string {s!r} is {len(ids)} tokens {ids}; one or two are supported")
        return out

    def kept_end_names(self, tok) -> list[str]:
        """End-of-sequence tokens that are not stops: they end a thinking round and stay in the context."""
        stop_ids = {i for i, _ in self.stop_rules(tok)}
        names = []
        for n in eos_names(tok):
            i = _id(tok, n)
            if i is not None and i not in stop_ids and n not in names:
                names.append(n)
        return names

    # ---------------------------------------------------------------- text
    def answer_of(self, rest: str) -> str:
        """The answer in the text after thinking: after the last `end` (s1: one newline dropped,
        think: all leading newlines); "" when there is no `end`."""
        k = rest.find(self.end)
        if k < 0:
            return ""
        ans = rest[k + len(self.end):]
        return ans.removeprefix("\n") if self.name == "s1" else ans.lstrip("\n")

    def training_body(self, thinking: str, attempt: str, end_of_turn: str) -> str:
        """The assistant turn of a training example after the thinking start: s1's
        "\\n{thinking}\\n<|im_start|>answer\\nAnswer: {attempt}<|im_end|>\\n"; think:
        "{thinking}\\n</think>\\n\\n{attempt}{eos}\\n" (the start already ends with the newline)."""
        if self.name == "s1":
            att = attempt if "Answer:" in attempt else "Answer: " + attempt
            return f"\n{thinking}\n{self.end}\n{att}{end_of_turn}\n"
        sep = "" if self.start.endswith("\n") else "\n"
        return f"{sep}{thinking}\n{self.end}\n\n{attempt}{end_of_turn}\n"


S1 = ThinkingFormat(name="s1", start=IM_START + "think", end=IM_START + "answer", stops=(IM_START, IM_END),
                    answer_prefix="\nFinal Answer:")
THINK = ThinkingFormat(name="think", start=THINK_OPEN + "\n", end=THINK_CLOSE, stops=(THINK_CLOSE, IM_END),
                       answer_prefix="\n\n")
# s1's step-conditional model (simplescaling/step-conditional-control) as s1 ran it with forcing
S1_STEPS = ThinkingFormat(name="s1", start=S1_STEP_START, end=IM_START + "answer", stops=(S1_STEP_STOP, IM_END),
                          answer_prefix="\nFinal Answer:")


def _id(tok, name: str):
    try:
        return tok.token_id(name)
    except KeyError:
        return None


def eos_names(tok) -> list[str]:
    """The end-of-sequence tokens the engine knows: the tokenizer's eos token, <|im_end|> and
    <|endoftext|> (Qwen2.5's generation config lists both), those the vocabulary has."""
    out = []
    for n in (getattr(tok, "eos_token", None), IM_END, ENDOFTEXT):
        if n and n not in out and _id(tok, n) is not None:
            out.append(n)
    return out


def has_think_tokens(tok) -> bool:
    for n in (THINK_OPEN, THINK_CLOSE):
        try:
            if len(tok.encode(n)) != 1:
                return False
        except Exception:  # noqa: BLE001 -- a stand-in tokenizer without encode
            return False
    return _id(tok, THINK_OPEN) is not None and _id(tok, THINK_CLOSE) is not None


def detect(tok) -> ThinkingFormat:
    """The checkpoint's format: `think` when <think> and </think> are tokens of its tokenizer
    (R1-distill, Qwen3), else s1's. A `think` format drops the <|im_end|> stop when the vocabulary
    has no <|im_end|> (R1-distill ends turns with its own eos token, which is then kept)."""
    if not has_think_tokens(tok):
        return S1
    stops = tuple(s for s in THINK.stops if _id(tok, s) is not None)
    return dataclasses.replace(THINK, stops=stops)


def resolve(tok, name: str = "auto", **overrides) -> ThinkingFormat:
    """The format called `name` ("auto": detected from `tok`), with the overrides applied
    (start, end, stops, forced_end, answer_prefix; None keeps the preset's)."""
    if name not in FORMATS:
        raise ValueError(f"unknown thinking format {name!r} (choose from {', '.join(FORMATS)})")
    base = detect(tok) if name == "auto" else (S1 if name == "s1" else THINK)
    fmt = base.with_overrides(**overrides)
    fmt.validate()
    return fmt
