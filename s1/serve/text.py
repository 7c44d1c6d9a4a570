"""Output text while a request runs: incremental detokenization and the s1 split.

The engine reports token ids as they are produced (RequestOutput); the final record
(GenerationOutput, LLMEngine.make_output) splits them as
    thinking = decode(first num_thinking_tokens output ids)
    answer   = decode(the rest) after its first thinking end (the tokenizer's thinking format,
               s1/model/thinking.py: "<|im_start|>answer", one leading newline dropped; <think>
               models: "</think>", leading newlines dropped)
with a trailing stop token left out. `ChoiceText` streams the same texts: reasoning deltas while
tokens are thinking tokens, then (once the delimiter has appeared) the answer. Every delta is text
that can no longer change, so the concatenated deltas equal the final texts exactly:

- `IncrementalDecoder` re-decodes only from the last safe token boundary and holds back a trailing
  U+FFFD (a multi-byte character split across tokens is emitted whole, once its last byte arrives);
  byte-level BPE decoding is then prefix-stable (tests/serve/test_app.py checks it on random tokens).
- Stop strings (OpenAI's `stop`) are matched host-side on the answer text (the thinking is never
  cut: budget forcing's stop tokens are answer-phase too): the answer is cut before the first match
  and the request is aborted (a second ChoiceText fed on the engine thread does it before the next
  step: s1/serve/engine_loop.py); while streaming, the last len(longest stop) - 1
  characters are held back until they cannot start a match.
- When the request finishes, `finish(output)` emits whatever is left of the final texts.
"""
from __future__ import annotations

from s1.model import thinking as _thinking

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Text of a growing list of token ids, emitted only where it is final."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.start = 0          # token index of the last safe boundary (decoder state: between chars)
        self.emitted = 0        # characters of decode(ids[start:]) already emitted
        self.text = ""          # everything emitted so far

    def push(self, ids) -> str:
        if not ids:
            return ""
        self.ids.extend(ids)
        t = self.tok.decode(self.ids[self.start:])
        if not t.endswith(REPLACEMENT):
            delta = t[self.emitted:]
            self.start, self.emitted = len(self.ids), 0
        else:   # an incomplete character may be pending: emit only up to the last complete one
            stable = t.rstrip(REPLACEMENT)
            delta = stable[self.emitted:] if len(stable) > self.emitted else ""
            self.emitted += len(delta)
        self.text += delta
        return delta


def cut_at_stop(text: str, stops, start: int = 0) -> int | None:
    """Index of the first match of any stop string in text[start:], or None."""
    best = None
    for s in stops:
        k = text.find(s, start)
        if k >= 0 and (best is None or k < best):
            best = k
    return best


class ChoiceText:
    """Text deltas of one engine request. mode "chat": ("reasoning" | "content", text) deltas, the
    s1 split; mode "completion": ("text", text) deltas of the whole output (stop strings apply after
    the answer delimiter when the request thinks, else to all of it).

    feed(RequestOutput) -> deltas; `stopped` turns True when a stop string matched (abort the
    request); finish(GenerationOutput) -> the remaining deltas, once the request has finished."""

    def __init__(self, tokenizer, mode: str, stop_strings=(), stop_ids=(), thinking: bool = True):
        assert mode in ("chat", "completion")
        self.tok, self.mode, self.thinking = tokenizer, mode, thinking
        self.fmt = getattr(tokenizer, "thinking_format", None) or _thinking.S1
        self.stops = tuple(s for s in stop_strings if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.stop_ids = set(stop_ids)
        self.ids: list[int] = []
        self.n_think = 0
        self.stopped = False            # a stop string matched while streaming (host-side)
        self.cut = False                # the final text was cut at a stop string
        self.sent = {"reasoning": "", "content": "", "text": ""}
        self.mismatches = 0             # final text not extending what was streamed (must stay 0)
        self._reasoning = IncrementalDecoder(tokenizer)
        self._rest = IncrementalDecoder(tokenizer)      # chat: output after the thinking
        self._rest_from: int | None = None              # where the rest starts (thinking is final)
        self._all = IncrementalDecoder(tokenizer)       # completion: the whole output

    # ------------------------------------------------------------------ while running
    def feed(self, ro) -> list[tuple[str, str]]:
        if ro.finished or self.stopped:
            return []                   # the last token may be a stop token: finish() handles it
        new = list(ro.new_token_ids)
        self.ids.extend(new)
        self.n_think = ro.num_thinking_tokens
        return self._chat_deltas(new) if self.mode == "chat" else self._completion_deltas(new)

    def _chat_deltas(self, new) -> list[tuple[str, str]]:
        out = []
        n, ids = self.n_think, self.ids
        if self._rest_from is None:
            r_end = min(n, len(ids))
            fed = len(self._reasoning.ids)
            d = self._reasoning.push(ids[fed:r_end])
            if d:
                self.sent["reasoning"] += d
                out.append(("reasoning", d))
            if len(ids) > n:            # a token past the thinking: the thinking is final
                self._rest_from = n
                self._rest.push(ids[n:])
        else:
            self._rest.push(new)
        if self._rest_from is not None:
            ans = self.fmt.answer_of(self._rest.text)
            if ans:
                d = self._stream("content", ans)
                if d:
                    out.append(("content", d))
        return out

    def _completion_deltas(self, new) -> list[tuple[str, str]]:
        self._all.push(new)
        text = self._all.text
        d = self._stream("text", text, self._stop_region(text))
        return [("text", d)] if d else []

    def _stop_region(self, text: str) -> int | None:
        """Where stop strings may match in a completion's text (None: nowhere yet)."""
        if not self.thinking:
            return 0
        end = self.fmt.end
        k = text.find(end)
        return None if k < 0 else k + len(end)

    def _stream(self, kind: str, text: str, region: int | None = 0) -> str:
        """The new final part of `text` (stop strings cut it, the possible start of one is held)."""
        if self.stops and region is not None:
            k = cut_at_stop(text, self.stops, region)
            if k is not None:
                text, self.stopped = text[:k], True
            else:
                text = text[:max(region, len(text) - self.hold)]
        sent = self.sent[kind]
        if len(text) <= len(sent):
            return ""
        d = text[len(sent):]
        self.sent[kind] = text
        return d

    # ------------------------------------------------------------------ at the end
    def final_texts(self, out) -> dict[str, str]:
        """The request's final texts from its GenerationOutput, cut at the first stop string."""
        if self.mode == "chat":
            answer = out.answer
            k = cut_at_stop(answer, self.stops)
            self.cut = self.cut or k is not None
            return {"reasoning": out.thinking, "content": answer if k is None else answer[:k]}
        ids = list(out.output_token_ids)
        if ids and out.finish_reason == "stop" and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        text = self.tok.decode(ids)
        region = self._stop_region(text)
        k = None if region is None else cut_at_stop(text, self.stops, region)
        self.cut = self.cut or k is not None
        return {"text": text if k is None else text[:k]}

    def finish(self, out) -> list[tuple[str, str]]:
        deltas = []
        for kind, final in self.final_texts(out).items():
            sent = self.sent[kind]
            if not final.startswith(sent):
                self.mismatches += 1     # never expected (tests/serve/test_app.py): count it, send the tail
            rest = final[len(sent):]
            if rest:
                deltas.append((kind, rest))
            self.sent[kind] = final
        return deltas

    def finish_reason(self, out) -> str:
        """"stop" when a stop string cut the text (the engine thread aborted the request right
        after the step that completed the match), else the engine's reason (the server maps it
        into OpenAI's set: s1/serve/app.py Generation.finish_reason)."""
        return "stop" if self.stopped or self.cut else out.finish_reason
