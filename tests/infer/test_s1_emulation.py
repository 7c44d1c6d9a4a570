"""Cross-check of the engine's budget forcing against an independent emulation of s1's evaluation loop.

s1 runs budget forcing on the host: its lm-eval fork
(`lm_eval/models/vllm_causallms.py`, `_model_generate`) calls vLLM once per thinking round and
re-prefills the whole context each time. `s1_budget_forcing` below re-implements that loop from
the rules (greedy decoding), with one deliberate difference: ONE GLOBAL cap on thinking tokens
(s1 gives every round the full budget and cuts afterwards). The rules, for reference:

1. prompt = chat template + "<|im_start|>assistant\\n<|im_start|>think" (no newline: the model
   writes it, and it counts as a thinking token);
2. a thinking round generates greedily until <|im_start|>/<|im_end|> (s1's `until_thinking` and
   stop: dropped, not counted) or <|endoftext|> (an EOS id of Qwen2.5's generation config: vLLM
   keeps it in `token_ids` and s1 strips only the until_thinking ids, so it stays in the context
   and counts as a thinking token), or until the global cap (a round may generate
   `cap - thinking_used` tokens); thinking tokens = generated thinking tokens (a kept
   <|endoftext|> included) + inserted extension tokens;
3. with num_wait > 0 every round (the first included) has vLLM's min_tokens=1: its first token
   may not be a thinking-stop token (greedy takes the best other token); a minimum of thinking
   tokens (min_thinking_tokens) bans the stop tokens while fewer thinking tokens have been
   written (a second deliberate difference: ONE GLOBAL minimum, where s1's min_tokens_thinking
   applies to every round);
4. a stop with extensions left: append the extension's token ids (cut at the cap), new round;
5. a stop without extensions left: append "<|im_start|>answer" (2 ids), the model continues;
6. cap reached: append "<|im_start|>answer\\nFinal Answer:", preceded by "\\n" only when the
   decoded last context token does not end with a newline;
7. "auto": cap = max_model_len - longest prompt of the call - len("<|im_start|>answer\\nFinal
   Answer:") - 100;
8. answer: greedy until <|im_end|>/<|endoftext|> (kept as the last output id) or until prompt +
   output fills max_model_len (finish "length"; the same limit cuts the thinking phase and the
   forced ids -- an extrapolation, s1's own cap is far below the context).

The same rules for `<think>` models (DeepSeek-R1-distill, Qwen3; the format of
s1/model/thinking.py): prompt = chat template + "<think>\n"; the stops are </think> and <|im_end|>
(dropped) and <|endoftext|> (kept); a natural end appends "</think>", the cap "</think>\n\n"
preceded by the conditional "\n". They run on a stand-in tokenizer (Qwen2.5's with <think> and
</think> added, tests/helpers.py make_think_tokenizer) and a Qwen3-style chat template.

The engine (`infer.LLM`) and the emulation are driven by the same deterministic context->logits
function (`ScriptBook.logits`): the engine through `ContextLogitsModel`, which rebuilds every
row's context from the paged-KV-cache metadata (so the engine's paging is checked too), the
emulation on its plain token list. Scenarios are seeded (S1_EMULATION_SEED overrides the seed).

Run: TRITON_INTERPRET=1 python -m pytest -q tests/infer/test_s1_emulation.py
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import random
import time
import traceback

import numpy as np
import pytest
import torch
from torch import nn

# ============================================================================ token ids
# The Qwen2.5 special-token ids; `Tok.load` resolves every id from the tokenizer and
# test_token_ids_match_the_tokenizer checks them against this list.
EXPECTED_IDS = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643,
                "think": 26865, "answer": 9217, "\n": 198, "Wait": 14190}
EXPECTED_FINAL_IDS = [151644, 9217, 198, 19357, 21806, 25]   # "<|im_start|>answer\nFinal Answer:"

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
PROMPT_TEMPLATE = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                   "<|im_start|>assistant\n<|im_start|>think")
FINAL_TEXT = "<|im_start|>answer\nFinal Answer:"
# <think> models (the stand-in's Qwen3-style template has no default system prompt)
THINK_PROMPT_TEMPLATE = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>\n"
THINK_FINAL_TEXT = "</think>\n\n"      # the forced end "\n</think>\n\n" without its conditional "\n"
AUTO_MARGIN = 100

# ordinary "word" tokens the scripted model writes (single tokens, no newline, no special meaning)
ORDINARY_WORDS = [" so", " then", " the", " we", " x", " =", " +", " is", " of", " a", " Let", " sum",
                  " first", " and", " which", " factor", " case", " prime"]
NEWLINE_TEXTS = ["\n", "\n\n", ".\n", ":\n"]            # tokens whose text ends with a newline
EXTENSIONS = ["Wait", "Hmm", "Alternatively", "", "Wait, let me check"]  # the last: multi-token


@dataclasses.dataclass
class Tok:
    """The tokenizer plus every id the rules and the scripts need (resolved from the tokenizer)."""
    tok: object
    vocab_size: int
    im_start: int
    im_end: int
    eot: int
    think: int
    answer: int
    nl: int
    final_ids: list
    ordinary: list
    newline_ids: list
    # the thinking format (s1's, or "think" for <think> models)
    name: str = "s1"
    prompt_template: str = PROMPT_TEMPLATE
    start_ids: tuple = ()          # the prompt's last two ids: the thinking start
    answer_marker: tuple = ()      # the ids after which the answer starts
    drop_stops: tuple = ()         # stops that end a round and are dropped
    keep_stops: tuple = ()         # stops that end a round and stay in the context (<|endoftext|>)
    delim_ids: tuple = ()          # appended at a natural end

    @classmethod
    def load(cls, path, name: str = "s1") -> Tok:
        from s1.model.tokenizer import Tokenizer
        tok = Tokenizer.from_pretrained(path)

        def one(text):
            ids = tok.encode(text)
            assert len(ids) == 1, f"{text!r} is not a single token: {ids}"
            return ids[0]

        ims, ime, eot = tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>")
        common = dict(tok=tok, vocab_size=tok.vocab_size, im_start=ims, im_end=ime, eot=eot,
                      think=one("think"), answer=one("answer"), nl=one("\n"),
                      ordinary=[one(w) for w in ORDINARY_WORDS], newline_ids=[one(t) for t in NEWLINE_TEXTS],
                      name=name, keep_stops=(eot,))
        if name == "s1":
            return cls(**common, final_ids=tok.encode(FINAL_TEXT), start_ids=(ims, one("think")),
                       answer_marker=(ims, one("answer")), drop_stops=(ims, ime), delim_ids=(ims, one("answer")))
        close = one("</think>")
        assert tok.encode("<think>\n") == [one("<think>"), one("\n")]
        return cls(**common, final_ids=tok.encode(THINK_FINAL_TEXT), prompt_template=THINK_PROMPT_TEMPLATE,
                   start_ids=(one("<think>"), one("\n")), answer_marker=(close,), drop_stops=(close, ime),
                   delim_ids=(close,))

    @property
    def think_stops(self):
        return self.drop_stops + self.keep_stops

    @property
    def primary_stop(self):
        """<|im_start|> (s1) or </think>: the format's own end of thinking."""
        return self.drop_stops[0]

    @property
    def answer_stops(self):
        return (self.im_end, self.eot)

    def encode(self, text):
        return self.tok.encode(text)

    def prompt_ids(self, question: str) -> list:
        return self.tok.encode(self.prompt_template.format(question=question))

    def ends_with_newline(self, token_id: int) -> bool:
        return self.tok.decode([token_id]).endswith("\n")

    def show(self, ids, start=0) -> str:
        return ", ".join(f"{start + i}:{self.tok.decode([t])!r}({t})" for i, t in enumerate(ids))


# ============================================================================ the s1 emulation
@dataclasses.dataclass
class S1Result:
    output_ids: list
    num_thinking_tokens: int
    finish_reason: str                 # "stop" | "length"
    tags: list                         # per output token: think | ext | end-natural | end-nl | end-final | answer
    events: list                       # (kind, thinking position, detail)


def auto_cap(max_model_len: int, prompts_ids, final_len: int) -> int:
    """Rule 7: the thinking cap of max_thinking_tokens="auto" for one generate call."""
    return max_model_len - max(len(p) for p in prompts_ids) - final_len - AUTO_MARGIN


def s1_budget_forcing(t: Tok, prompt_ids, logits_fn, *, cap, num_wait: int, extension: str,
                      max_model_len: int, min_think: int = 0) -> S1Result:
    """s1's budget-forcing loop, host side, re-prefill style: every token is chosen by calling
    `logits_fn(context)` on the whole context (prompt + everything so far) and taking the greedy
    argmax over the real vocabulary. `cap` is an int (the global thinking cap) or None (none)."""
    ctx = list(prompt_ids)
    tags, events = [], []
    ext_ids = t.encode(extension) if extension else []   # ids, never re-tokenized text
    stops = set(t.think_stops)

    def greedy(banned):
        logits = np.array(logits_fn(list(ctx)).to(torch.float32).cpu().numpy(), copy=True)
        raw = int(logits.argmax())
        logits[t.vocab_size:] = -np.inf                   # padded embedding rows: never sampled
        real = int(logits.argmax())
        if raw != real:
            events.append(("pad-masked", len(tags), raw))
        if real in banned:
            logits[list(banned)] = -np.inf
            return int(logits.argmax()), real
        return real, real

    def push(tok_id, tag) -> bool:
        if len(ctx) >= max_model_len:
            return False
        ctx.append(tok_id)
        tags.append(tag)
        return True

    def result(finish, thinking):
        if finish == "length":
            events.append(("context-limit", thinking, tags[-1] if tags else "prompt"))
        return S1Result(ctx[len(prompt_ids):], thinking, finish, tags, events)

    thinking, waits_left = 0, num_wait
    min_tokens_1 = num_wait > 0            # s1 sets vLLM min_tokens=1 on every round when extending
    end = None
    after_ext = None                       # the extension that started the current round
    while end is None:                     # one iteration = one thinking round (one re-prefill)
        first = True
        while True:
            if cap is not None and thinking >= cap:
                end = "cap"
                break
            if len(ctx) >= max_model_len:
                return result("length", thinking)
            below_min = thinking < min_think
            banned = stops if ((min_tokens_1 and first) or below_min) else ()
            tok_id, unmasked = greedy(banned)
            if tok_id != unmasked:
                if below_min and not (min_tokens_1 and first):
                    events.append(("min-masked", thinking, None))
                else:
                    where = "first" if after_ext is None else ("after-empty-ext" if after_ext == "" else "after-ext")
                    events.append(("min1-masked", thinking, where))
            first = False
            if tok_id in stops:
                events.append(("stop", thinking, tok_id))
                if tok_id in t.keep_stops:       # vLLM keeps an EOS id in token_ids; s1 does not strip it
                    events.append(("kept-end", thinking, tok_id))
                    if not push(tok_id, "kept-end"):
                        return result("length", thinking)
                    thinking += 1
                if waits_left > 0:
                    waits_left -= 1
                    room = len(ext_ids) if cap is None else cap - thinking
                    kept = ext_ids[:room]
                    events.append(("ext", thinking, "cut" if len(kept) < len(ext_ids) else
                                    ("fills-cap" if cap is not None and thinking + len(kept) == cap and kept else "")))
                    for x in kept:
                        if not push(x, "ext"):
                            return result("length", thinking)
                        thinking += 1
                    after_ext = extension
                    break                  # new round
                end = "natural"
                break
            if not push(tok_id, "think"):
                return result("length", thinking)
            thinking += 1

    nl = False
    if end == "natural":
        forced, tag = list(t.delim_ids), "end-natural"
        events.append(("natural-end", thinking, None))
    else:
        nl = not t.ends_with_newline(ctx[-1])
        forced, tag = ([t.nl] if nl else []) + t.final_ids, "end-final"
        events.append(("cap-end", thinking, "nl-inserted" if nl else "ends-with-newline"))
    for i, x in enumerate(forced):
        if not push(x, "end-nl" if nl and i == 0 else tag):
            return result("length", thinking)

    while True:                            # answer phase (its own vLLM call in s1, min_tokens=0)
        if len(ctx) >= max_model_len:
            return result("length", thinking)
        tok_id, _ = greedy(())
        push(tok_id, "answer")
        if tok_id in t.answer_stops:
            events.append(("answer-stop", thinking, tok_id))
            return result("stop", thinking)
        if tok_id == t.im_start:
            events.append(("im_start-in-answer", thinking, None))


# ============================================================================ the scripted model
@dataclasses.dataclass
class Script:
    """What the model prefers, by phase and position. Thinking position n = number of tokens after
    "<|im_start|>think"; answer position a = number of tokens after "<|im_start|>answer"."""
    sid: int
    stops: dict                 # n -> ranked stop tokens put on top at thinking position n
    newlines: dict              # n -> newline-ending token ranked next
    pad_top: int | None         # a padded id ranked above everything (must be masked)
    answer_len: int | None      # a >= answer_len -> the answer stop token on top; None: never
    answer_stop: int
    answer_nl: bool             # a == 0 -> "\n" first
    answer_im_start: int | None  # answer position where <|im_start|> is preferred (not a stop there)


class ScriptBook:
    """The deterministic context -> logits function shared by the engine's model and the emulation.

    logits(ctx) = BASE (a fixed permutation of 0..V-1, all distinct) with the ranked preferred
    tokens of `ranked(ctx)` overwritten by TOP values (V+64, V+63, ...): no ties anywhere, exact
    float32 values, a pure function of the token list."""

    def __init__(self, t: Tok, vocab: int):
        self.t = t
        self.vocab = vocab
        g = torch.Generator().manual_seed(20250131)
        self.base = torch.randperm(vocab, generator=g).to(torch.float32)
        self.top = torch.arange(vocab + 64, vocab, -1, dtype=torch.float32)
        self._base_np, self._top_np = self.base.numpy(), self.top.numpy()
        self.scripts: dict = {}     # tuple(prompt ids before "<|im_start|>think") -> Script

    def add(self, question: str, script: Script) -> None:
        key = tuple(self.t.prompt_ids(question)[:-2])
        assert key not in self.scripts, f"duplicate question {question!r}"
        self.scripts[key] = script

    def _ordinary(self, ctx, sid):
        h = (ctx[-1] * 1000003 + (ctx[-2] if len(ctx) > 1 else 0) * 10007
             + (ctx[-3] if len(ctx) > 2 else 0) * 101 + len(ctx) * 131 + sid * 7919) % 2147483647
        cands = self.t.ordinary
        first = cands[h % len(cands)]
        second = cands[(h // 7 + 1 + h % len(cands)) % len(cands)]
        return [first] if second == first else [first, second]

    def ranked(self, ctx) -> list:
        t = self.t
        s0, s1_ = t.start_ids
        ts = next((i for i in range(len(ctx) - 1) if ctx[i] == s0 and ctx[i + 1] == s1_), None)
        script = self.scripts.get(tuple(ctx[:ts])) if ts is not None else None
        if script is None:                 # unknown context (warm-up, foreign prompt)
            return [t.ordinary[0]]
        gen = ctx[ts + 2:]
        m = t.answer_marker
        ans = next((j for j in range(len(gen) - len(m) + 1) if tuple(gen[j:j + len(m)]) == m), None)
        pre = [script.pad_top] if script.pad_top is not None else []
        if ans is None:                    # thinking phase
            n = len(gen)
            return (pre + list(script.stops.get(n, ())) + ([script.newlines[n]] if n in script.newlines else [])
                    + self._ordinary(ctx, script.sid))
        a = len(gen) - ans - len(m)
        if script.answer_len is not None and a >= script.answer_len:
            return pre + [script.answer_stop] + self._ordinary(ctx, script.sid)
        if a == 0 and script.answer_nl:
            return pre + [t.nl] + self._ordinary(ctx, script.sid)
        if a == script.answer_im_start:
            return pre + [t.im_start] + self._ordinary(ctx, script.sid)
        return pre + self._ordinary(ctx, script.sid)

    def logits(self, ctx) -> torch.Tensor:
        r = self.ranked(ctx)
        out = self._base_np.copy()
        out[r] = self._top_np[:len(r)]
        return torch.from_numpy(out)


def num_cache_slots(cache) -> int:
    """ENGINE-SPECIFIC: number of KV slots (num_pages * page_size; k is [L, P, page, Hk, D])."""
    return cache.k.shape[1] * cache.k.shape[2]


def read_step_contexts(cache, slot_tokens: torch.Tensor, input_ids, positions, kwargs):
    """ENGINE-SPECIFIC (adapt here when the step metadata is renamed): store this step's new tokens
    in `slot_tokens` (slot -> token id) and return, per packed row, (sequence context list, end):
    the row's context is ctx[:end] (its own token included), or None for a padding row.

    Reads `cache.meta` (s1/infer/paged_cache.py StepMeta): slot_mapping; prefill: cu_seqlens_q/k and
    gather_slots (None: the context is the new tokens themselves); decode: block_tables and
    context_lens. Checks that each row's position equals end - 1 and that no unwritten slot is read."""
    T = input_ids.shape[0]
    if cache is None:                      # no cache (CUDA memory probe): packed independent sequences
        cu = kwargs.get("cu_seqlens")
        cu = [0, T] if cu is None else cu.tolist()
        ids = input_ids.tolist()
        rows = [None] * T
        for a, b in itertools.pairwise(cu):
            for r in range(a, b):
                rows[r] = (ids[a:b], r - a + 1)
        return rows
    m = cache.meta
    page_size = cache.k.shape[2]
    sm = m.slot_mapping
    valid = sm >= 0
    slot_tokens[sm[valid]] = input_ids[valid].to(slot_tokens.dtype)
    pos = positions.tolist()
    rows = [None] * T
    if m.is_prefill:
        cu_q, cu_k = m.cu_seqlens_q.tolist(), m.cu_seqlens_k.tolist()
        ids = input_ids.tolist()
        gathered = slot_tokens[m.gather_slots].tolist() if m.gather_slots is not None else None
        for b in range(len(cu_q) - 1):
            q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
            ctx = gathered[k0:k1] if gathered is not None else ids[q0:q1]
            assert len(ctx) == k1 - k0, f"prefill seq {b}: {len(ctx)} context tokens, cu_seqlens_k says {k1 - k0}"
            cached = (k1 - k0) - (q1 - q0)
            for r in range(q0, q1):
                rows[r] = (ctx, cached + r - q0 + 1)
    else:
        lens = m.context_lens.tolist()
        bt = m.block_tables
        for b in range(T):
            if int(sm[b]) < 0:
                continue                   # padding row
            p = torch.arange(lens[b], device=bt.device)
            slots = bt[b, p // page_size].to(torch.int64) * page_size + p % page_size
            rows[b] = (slot_tokens[slots].tolist(), lens[b])
    for r, row in enumerate(rows):
        if row is None:
            continue
        ctx, end = row
        assert pos[r] == end - 1, f"row {r}: position {pos[r]} but its context has {end} tokens"
        assert -1 not in ctx[:end], f"row {r}: context reads a never-written KV slot: {ctx[:end]}"
    return rows


class ContextLogitsModel(nn.Module):
    """Stands in for Qwen2ForCausalLM: logits of a row = ScriptBook.logits(context of that row),
    the context being read back from the paged KV cache (a private slot -> token id table)."""

    def __init__(self, cfg, book: ScriptBook):
        super().__init__()
        self.config = cfg
        self.weight = nn.Parameter(torch.zeros(1, dtype=torch.float32))  # the engine reads the dtype
        self.book = book
        self.slot_tokens = None
        self.rows_computed = 0

    def forward(self, input_ids, positions, kv_cache=None, logits_indices=None, **kwargs):
        if kv_cache is not None:
            n_slots = num_cache_slots(kv_cache)
            if self.slot_tokens is None or self.slot_tokens.numel() != n_slots:
                self.slot_tokens = torch.full((n_slots,), -1, dtype=torch.int64, device=input_ids.device)
        rows = read_step_contexts(kv_cache, self.slot_tokens, input_ids, positions, kwargs)
        want = range(input_ids.shape[0]) if logits_indices is None else logits_indices.tolist()
        base = self.book.base.to(input_ids.device)
        out = base.repeat(len(want), 1)
        for i, r in enumerate(want):
            if rows[r] is None:
                continue
            ctx, end = rows[r]
            ranked = self.book.ranked(ctx[:end])
            out[i, ranked] = self.book.top[:len(ranked)].to(out.device)
            self.rows_computed += 1
        return out


# ============================================================================ scenarios
MAX_POS = 320          # model config max_position_embeddings (main LLM's context)
PREFIX_LEN = 256       # LLM(max_model_len=...) of the prefix-caching LLM
BUDGET_KINDS = ["zero", "one", "small", "medium", "large", "huge", "auto"]
BUDGET_WEIGHTS = [6, 6, 30, 24, 12, 4, 18]


@dataclasses.dataclass
class Scenario:
    sid: int
    question: str
    budget_kind: str
    max_thinking_tokens: object     # int or "auto"
    num_wait: int
    extension: str
    script: Script
    nl_at_cap: bool
    cap: int = 0                    # effective cap (auto resolved) -- set per batch
    group: str = ""
    min_think: int = 0              # min_thinking_tokens

    def describe(self, t: Tok) -> str:
        s = self.script
        stops = {n: [t.tok.decode([x]) for x in v] for n, v in sorted(s.stops.items())}
        nls = {n: t.tok.decode([x]) for n, x in sorted(s.newlines.items())}
        ans = ("never (runs to the context)" if s.answer_len is None else
               f"stop {t.tok.decode([s.answer_stop])!r} at answer pos >= {s.answer_len}")
        return (f"scenario {self.sid} [{self.group}] budget={self.budget_kind}:{self.max_thinking_tokens!r}"
                f" (cap {self.cap}) min={self.min_think} num_wait={self.num_wait} extension={self.extension!r} "
                f"nl_at_cap={self.nl_at_cap} pad_top={s.pad_top} stops@={stops} newlines@={nls} "
                f"answer: {ans}, nl first={s.answer_nl}, <|im_start|>@{s.answer_im_start}")


def make_batch(t: Tok, book: ScriptBook, rng: random.Random, first_sid: int, n: int, max_model_len: int,
               group: str) -> list:
    words = ["alpha", "beta", "gamma", "delta", "prime", "sum", "graph", "angle", "root", "series",
             "triangle", "integer", "modulo", "probability", "sequence", "circle"]
    questions = []
    for k in range(n):
        sid = first_sid + k
        q = f"Problem {sid}: " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 24)))
        questions.append(q.strip())
    cap_auto = auto_cap(max_model_len, [t.prompt_ids(q) for q in questions], len(t.final_ids))
    batch = []
    for k, q in enumerate(questions):
        sid = first_sid + k
        prompt_len = len(t.prompt_ids(q))
        room = max_model_len - prompt_len
        kind = rng.choices(BUDGET_KINDS, BUDGET_WEIGHTS)[0]
        cap = {"zero": 0, "one": 1, "small": rng.randint(2, 12), "medium": rng.randint(13, 60),
               "large": rng.randint(61, room - 20), "huge": rng.randint(room, 4 * room),
               "auto": cap_auto}[kind]
        mtt = "auto" if kind == "auto" else cap
        num_wait = rng.choices([0, 1, 2, 3, 4], [30, 25, 20, 15, 10])[0]
        ext = rng.choices(EXTENSIONS, [35, 15, 15, 20, 15])[0]
        ext_len = len(t.encode(ext)) if ext else 0
        span = min(cap, room)                # thinking positions that can matter
        stops = {}

        p0 = t.primary_stop                                     # <|im_start|> (s1) or </think>

        def stop_list():
            return rng.choice([[p0], [t.im_end], [t.eot], [t.im_end, p0],
                               [p0, t.eot, t.im_end], [p0], [t.im_end], [t.eot, p0]])

        if span > 0:
            horizon = min(span, rng.choice([8, 20, 60, 400]))
            for _ in range(rng.randint(0, num_wait + 2)):
                stops[rng.randrange(horizon)] = stop_list()
            if rng.random() < 0.3:
                stops[0] = stop_list()                           # at the very first thinking token
            for p in list(stops):                                # right after an extension
                if ext_len and rng.random() < 0.4 and p + ext_len < span:
                    stops[p + ext_len] = stop_list()
            if rng.random() < 0.15:
                stops[span - 1] = stop_list()                    # at the last allowed position
        nl_at_cap = cap > 0 and rng.random() < 0.5
        newlines = {}
        for p in range(min(span, 300)):
            if p != cap - 1 and rng.random() < 0.04:
                newlines[p] = rng.choice(t.newline_ids)
        if nl_at_cap and cap - 1 < room:
            newlines[cap - 1] = rng.choice(t.newline_ids)
        answer_len = rng.choices([0, rng.randint(1, 4), rng.randint(5, 12), None], [8, 40, 37, 15])[0]
        script = Script(sid=sid, stops=stops, newlines=newlines,
                        pad_top=rng.randrange(t.vocab_size, book.vocab) if rng.random() < 0.15 else None,
                        answer_len=answer_len, answer_stop=t.im_end if rng.random() < 0.75 else t.eot,
                        answer_nl=rng.random() < 0.8,
                        answer_im_start=rng.randint(1, 6) if rng.random() < 0.12 else None)
        book.add(q, script)
        # a minimum of thinking tokens in some scenarios (its own generator: the other draws stay as they were)
        mrng = random.Random(sid * 7919 + seed())
        min_think = mrng.choice([1, 2, 5, 12, 40]) if mrng.random() < 0.2 else 0
        if kind != "auto":
            min_think = min(min_think, cap)
        batch.append(Scenario(sid=sid, question=q, budget_kind=kind, max_thinking_tokens=mtt,
                              num_wait=num_wait, extension=ext, script=script, nl_at_cap=nl_at_cap,
                              cap=cap, group=group, min_think=min_think))
    return batch


def seed() -> int:
    return int(os.environ.get("S1_EMULATION_SEED", "1234"))


# ============================================================================ running both sides
@dataclasses.dataclass
class Run:
    scenario: Scenario
    expected: S1Result
    prompt_ids: list
    engine: object = None            # GenerationOutput or None
    engine_error: str | None = None
    redo: object = None              # prompt ids -> S1Result (same scenario, another prompt)


def emulate_batch(t: Tok, book: ScriptBook, batch, max_model_len: int) -> list:
    prompts = [t.prompt_ids(s.question) for s in batch]
    cap_auto = auto_cap(max_model_len, prompts, len(t.final_ids))
    runs = []
    for s, p in zip(batch, prompts):
        cap = cap_auto if s.max_thinking_tokens == "auto" else s.max_thinking_tokens
        assert cap == s.cap
        def redo(prompt, s=s, cap=cap):
            return s1_budget_forcing(t, prompt, book.logits, cap=cap, num_wait=s.num_wait,
                                     extension=s.extension, max_model_len=max_model_len, min_think=s.min_think)
        runs.append(Run(s, redo(p), p, redo=redo))
    return runs


def engine_batch(llm, runs, repeat: int = 1) -> None:
    """One generate call for the batch (per-prompt SamplingParams). A SamplingParams the engine
    refuses, an 'error' output or an engine exception is recorded on the runs it concerns."""
    from s1 import kernels
    from s1.infer import SamplingParams
    params, idx = [], []
    for i, r in enumerate(runs):
        s = r.scenario
        try:
            params.append(SamplingParams(temperature=0.0, max_thinking_tokens=s.max_thinking_tokens,
                                         num_wait=s.num_wait, extension=s.extension, max_tokens=None,
                                         min_thinking_tokens=s.min_think))
            idx.append(i)
        except Exception as e:  # noqa: BLE001 -- e.g. "auto" not accepted yet
            r.engine_error = f"SamplingParams refused: {type(e).__name__}: {e}"
    if not idx:
        return
    for _ in range(repeat):
        try:
            with kernels.use_backend("torch"):
                outs = llm.generate([runs[i].scenario.question for i in idx], params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc(limit=4)
            for i in idx:
                runs[i].engine_error = f"generate raised {type(e).__name__}: {e}\n{tb}"
            return
        for i, o in zip(idx, outs):
            if o.finish_reason == "error":
                runs[i].engine_error = f"engine error output: {o.error}"
            elif runs[i].engine is not None and runs[i].engine.output_token_ids != o.output_token_ids:
                runs[i].engine_error = ("engine output changed between two identical generate calls: "
                                        f"{runs[i].engine.output_token_ids} then {o.output_token_ids}")
            runs[i].engine = o


def fmt_events(events) -> str:
    """kind@thinking-position:detail, with runs of pad-masked events collapsed."""
    out, pads = [], 0
    for k, n, d in events:
        if k == "pad-masked":
            pads += 1
            continue
        if pads:
            out.append(f"pad-masked x{pads}")
            pads = 0
        out.append(f"{k}@{n}" + (f":{d}" if d not in (None, "") else ""))
    if pads:
        out.append(f"pad-masked x{pads}")
    return " | ".join(out)


def first_diff(a, b) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check(t: Tok, r: Run) -> tuple[str, str] | None:
    """None when the engine reproduces s1; else (category, report)."""
    s, e = r.scenario, r.expected
    lines = [s.describe(t)]
    lines.append(f"  s1 events: {fmt_events(e.events)}")
    if r.engine_error:
        lines.append("  " + r.engine_error.strip().replace("\n", "\n  "))
        return r.engine_error.split(":")[0].split("\n")[0], "\n".join(lines)
    o = r.engine
    problems = []
    if list(o.prompt_token_ids) != r.prompt_ids:
        d = first_diff(r.prompt_ids, list(o.prompt_token_ids))
        problems.append("prompt")
        lines.append(f"  prompt_token_ids differ at {d} (s1 {len(r.prompt_ids)} ids, engine {len(o.prompt_token_ids)}):"
                     f"\n    s1    : ...{t.show(r.prompt_ids[max(0, d - 3):d + 4], max(0, d - 3))}"
                     f"\n    engine: ...{t.show(list(o.prompt_token_ids)[max(0, d - 3):d + 4], max(0, d - 3))}")
    category = _compare_output(t, e, o, lines, problems, "")
    if "prompt" in problems and r.redo is not None:
        # the rest of the rules, judged on the engine's own prompt (as if s1 had been given it)
        e2 = r.redo(list(o.prompt_token_ids))
        sub = []
        cat2 = _compare_output(t, e2, o, sub, [], "(s1 rules on the engine's prompt) ")
        lines.append("  -- s1's loop run on the ENGINE's prompt instead: "
                     + ("the outputs agree" if not sub else "\n".join(["still differs"] + sub)))
        category = "prompt; then " + (cat2 or "agrees")
    if not problems:
        return None
    return category or "+".join(problems), "\n".join(lines)


def _compare_output(t: Tok, e: S1Result, o, lines, problems, label) -> str | None:
    got = list(o.output_token_ids)
    d = first_diff(e.output_ids, got)
    category = None
    if d is not None:
        tag = e.tags[d] if d < len(e.tags) else "after-s1-end"
        category = f"output@{tag}"
        problems.append("output")
        lo = max(0, d - 4)
        lines.append(f"  {label}output_token_ids first differ at {d} (s1 tag {tag!r}; s1 {len(e.output_ids)} ids, "
                     f"engine {len(got)}):\n    s1    : {t.show(e.output_ids[lo:d + 6], lo)}"
                     f"\n    engine: {t.show(got[lo:d + 6], lo)}")
    if o.num_thinking_tokens != e.num_thinking_tokens:
        problems.append("thinking")
        category = category or "num_thinking_tokens"
        lines.append(f"  {label}num_thinking_tokens: s1 {e.num_thinking_tokens}, engine {o.num_thinking_tokens}")
    if o.finish_reason != e.finish_reason:
        problems.append("finish")
        category = category or "finish_reason"
        lines.append(f"  {label}finish_reason: s1 {e.finish_reason!r}, engine {o.finish_reason!r}")
    return category


def summarize(t: Tok, runs, title: str, max_details: int = 12) -> str | None:
    bad = [(r, c) for r in runs if (c := check(t, r)) is not None]
    if not bad:
        return None
    by_cat = collections.Counter(c[0] for _, c in bad)
    by_kind = collections.Counter(r.scenario.budget_kind for r, _ in bad)
    prompt_bad = sum(1 for r, _ in bad if r.engine is not None and list(r.engine.prompt_token_ids) != r.prompt_ids)
    out = [f"{title}: {len(bad)} of {len(runs)} scenarios differ from the s1 emulation",
           f"  prompt_token_ids differ in {prompt_bad}",
           "  first difference by s1 tag / reason: " + ", ".join(f"{k}: {v}" for k, v in by_cat.most_common()),
           "  failing scenarios by budget kind: " + ", ".join(f"{k}: {v}" for k, v in by_kind.most_common()),
           ("  (output@TAG: the first differing output id is, on s1's side, a TAG token: think = generated "
           "thinking, ext = extension, end-natural = '<|im_start|>answer', end-nl / end-final = the forced "
           "cap sequence, answer = answer phase. 'prompt; then X': the prompts differ, and s1's loop run on "
           "the engine's own prompt gives X)")]
    shown, seen = 0, collections.Counter()
    for r, (cat, rep) in bad:              # a few of each category first
        if seen[cat] < 2 and shown < max_details:
            out.append(rep)
            seen[cat] += 1
            shown += 1
    out.append(f"  ({len(bad) - shown} more not shown; S1_EMULATION_SEED={seed()})")
    return "\n".join(out)


# ============================================================================ fixtures
_CACHE: dict = {}
MAIN_BATCHES, MAIN_BATCH_SIZE = 4, 36   # + THINK_BATCH_SIZE <think> scenarios: 180 (the file's cost stays put)
PREFIX_BATCH_SIZE = 26


THINK_BATCH_SIZE = 36


def _tok(path) -> Tok:
    if "tok" not in _CACHE:
        _CACHE["tok"] = Tok.load(path)
    return _CACHE["tok"]


def _think_tok(path) -> Tok:
    if "think_tok" not in _CACHE:
        _CACHE["think_tok"] = Tok.load(path, name="think")
    return _CACHE["think_tok"]


def _config(t: Tok):
    from s1.model.config import Qwen2Config
    return Qwen2Config(vocab_size=151936, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_POS,
                       torch_dtype="float32")


def _emulated(path) -> dict:
    """The scenarios and s1's expected outputs (no engine), computed once per module."""
    if "emulated" in _CACHE:
        return _CACHE["emulated"]
    t = _tok(path)
    cfg = _config(t)
    rng = random.Random(seed())
    book = ScriptBook(t, cfg.vocab_size)
    t0 = time.perf_counter()
    main_batches = [make_batch(t, book, rng, 1000 * (b + 1), MAIN_BATCH_SIZE, MAX_POS, f"main-{b}")
                    for b in range(MAIN_BATCHES)]
    prefix_batch = make_batch(t, book, rng, 9000, PREFIX_BATCH_SIZE, PREFIX_LEN, "prefix")
    res = {"cfg": cfg, "book": book,
           "main": [emulate_batch(t, book, b, MAX_POS) for b in main_batches],
           "prefix": emulate_batch(t, book, prefix_batch, PREFIX_LEN),
           "timings": {"emulation": round(time.perf_counter() - t0, 2)}}
    _CACHE["emulated"] = res
    return res


def _runs(path) -> dict:
    """The emulated scenarios run through the engine, once per module: the main LLM (no prefix
    caching, page_size 16, context = max_position_embeddings) gets MAIN_BATCHES generate calls; a
    second LLM (prefix caching, page_size 4, max_model_len=PREFIX_LEN, only 80 pages so that it
    preempts and re-prefills) runs its batch twice."""
    if "runs" in _CACHE:
        return _CACHE["runs"]
    from s1 import kernels
    from s1.infer import LLM
    t = _tok(path)
    emu = _emulated(path)
    cfg, book, timings = emu["cfg"], emu["book"], emu["timings"]
    res = {"main": [], "prefix": emu["prefix"], "timings": timings}
    t0 = time.perf_counter()
    with kernels.use_backend("torch"):
        llm = LLM(model=ContextLogitsModel(cfg, book), tokenizer=t.tok, device="cpu",
                  enable_prefix_caching=False, page_size=16)
    for runs in emu["main"]:
        engine_batch(llm, runs)
        res["main"].extend(runs)
    timings["engine-main"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    with kernels.use_backend("torch"):
        llm2 = LLM(model=ContextLogitsModel(cfg, book), tokenizer=t.tok, device="cpu",
                   enable_prefix_caching=True, page_size=4, max_model_len=PREFIX_LEN, num_pages=80)
    engine_batch(llm2, emu["prefix"], repeat=2)   # the second call hits the prefix cache
    res["prefix_stats"] = dict(llm2.stats)
    timings["engine-prefix"] = round(time.perf_counter() - t0, 2)
    _CACHE["runs"] = res
    return res


def _think_runs(path) -> dict:
    """<think>-format scenarios (the stand-in tokenizer): emulated, then one generate call on an
    engine whose thinking format is detected from that tokenizer; once per module."""
    if "think_runs" in _CACHE:
        return _CACHE["think_runs"]
    from s1 import kernels
    from s1.infer import LLM
    t = _think_tok(path)
    cfg = _config(t)
    book = ScriptBook(t, cfg.vocab_size)
    batch = make_batch(t, book, random.Random(seed() + 29), 20000, THINK_BATCH_SIZE, MAX_POS, "think")
    t0 = time.perf_counter()
    runs = emulate_batch(t, book, batch, MAX_POS)
    timings = {"emulation": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    with kernels.use_backend("torch"):
        llm = LLM(model=ContextLogitsModel(cfg, book), tokenizer=t.tok, device="cpu",
                  enable_prefix_caching=False, page_size=16)
    assert llm.engine.thinking_format.name == "think"
    engine_batch(llm, runs)
    timings["engine"] = round(time.perf_counter() - t0, 2)
    _CACHE["think_runs"] = res = {"runs": runs, "timings": timings}
    return res


@pytest.fixture
def tok(qwen_tokenizer_dir) -> Tok:
    return _tok(qwen_tokenizer_dir)


@pytest.fixture
def ttok(think_tokenizer_dir) -> Tok:
    return _think_tok(think_tokenizer_dir)


@pytest.fixture
def think_runs(think_tokenizer_dir) -> dict:
    return _think_runs(think_tokenizer_dir)


@pytest.fixture
def emulated(qwen_tokenizer_dir) -> dict:
    return _emulated(qwen_tokenizer_dir)


@pytest.fixture
def runs(qwen_tokenizer_dir) -> dict:
    return _runs(qwen_tokenizer_dir)


# ============================================================================ tests: ids and emulation
def test_token_ids_match_the_tokenizer(tok):
    for text, want in EXPECTED_IDS.items():
        assert tok.tok.encode(text) == [want], text
    assert (tok.im_start, tok.im_end, tok.eot, tok.think, tok.answer, tok.nl) == (
        151644, 151645, 151643, 26865, 9217, 198)
    assert tok.final_ids == EXPECTED_FINAL_IDS
    assert tok.encode("<|im_start|>answer") == [151644, 9217]
    assert tok.encode("Hmm") == [80022] and tok.encode("Alternatively") == [92014]
    assert tok.encode("Wait, let me check") == [14190, 11, 1077, 752, 1779]
    assert [tok.tok.decode([i]) for i in tok.newline_ids] == NEWLINE_TEXTS
    assert not any(tok.ends_with_newline(i) for i in tok.ordinary)
    assert tok.vocab_size == 151665


def test_emulation_prompt(tok):
    ids = tok.prompt_ids("What is 2+2?")
    assert ids[-2:] == [151644, 26865]                  # "<|im_start|>think", no trailing newline
    assert ids[:3] == [151644, 8948, 198]               # "<|im_start|>system\n"
    assert tok.tok.decode(ids) == PROMPT_TEMPLATE.format(question="What is 2+2?")
    assert tok.tok.decode(ids).endswith("<|im_start|>assistant\n<|im_start|>think")


def _table(book_vocab, prompt_len, table, default):
    """A tiny scripted logits function for the hand-checked cases: ranked tokens per output position."""
    base = torch.arange(book_vocab, dtype=torch.float32) * 0.0 - torch.arange(book_vocab, dtype=torch.float32)

    def fn(ctx):
        r = table.get(len(ctx) - prompt_len, default)
        out = base.clone()
        out[r] = torch.arange(len(r), 0, -1, dtype=torch.float32) + 10.0
        return out
    return fn


V = 151936
A, B, C = 773, 1221, 279               # " so", " then", " the"
IMS, IME, EOT, ANS, NL, W = 151644, 151645, 151643, 9217, 198, 14190
FINAL = [151644, 9217, 198, 19357, 21806, 25]


def _emulate(tok, table, default=(A,), *, cap=50, num_wait=0, extension="Wait", max_model_len=300, min_think=0):
    p = tok.prompt_ids("q")
    return s1_budget_forcing(tok, p, _table(V, len(p), table, list(default)), cap=cap, num_wait=num_wait,
                             extension=extension, max_model_len=max_model_len, min_think=min_think)


def _ids(r):
    return r.output_ids, r.num_thinking_tokens, r.finish_reason


def test_emulation_natural_end_without_waits(tok):
    r = _emulate(tok, {0: [NL], 1: [B], 2: [IME, A], 4: [NL], 5: [B], 6: [IME]}, cap=10)
    assert _ids(r) == ([NL, B, IMS, ANS, NL, B, IME], 2, "stop")
    # a stop at the very first thinking token ends thinking at once when num_wait == 0
    r = _emulate(tok, {0: [IMS, A], 2: [EOT]}, cap=10)
    assert _ids(r) == ([IMS, ANS, EOT], 0, "stop")


def test_emulation_min_tokens_and_extension(tok):
    # first token: both stops masked (min_tokens=1) -> A; pos 1 stop -> "Wait"; the round after
    # the extension cannot stop at once (-> C); pos 3 stop, no waits left -> natural end
    r = _emulate(tok, {0: [IMS, IME, A], 1: [IME, B], 2: [IMS, C], 3: [IME, A], 5: [EOT]},
                 cap=10, num_wait=1)
    assert _ids(r) == ([A, W, C, IMS, ANS, EOT], 3, "stop")
    assert [k for k, *_ in r.events].count("min1-masked") == 2


def test_emulation_empty_extension(tok):
    # "" appends nothing: the stop is dropped and the same position is generated again, stops masked
    r = _emulate(tok, {0: [B], 1: [IME, A], 2: [IMS, C], 3: [IME, A], 5: [IME]},
                 cap=10, num_wait=2, extension="")
    assert _ids(r) == ([B, A, C, IMS, ANS, IME], 3, "stop")


def test_emulation_cap_newline_rule(tok):
    r = _emulate(tok, {10: [IME]}, cap=3)                        # " so so so" -> "\n" inserted
    assert _ids(r) == ([A, A, A, NL] + FINAL + [IME], 3, "stop")
    r = _emulate(tok, {2: [624], 9: [IME]}, cap=3)               # ends with ".\n" -> no "\n"
    assert _ids(r) == ([A, A, 624] + FINAL + [IME], 3, "stop")
    r = _emulate(tok, {2: [271], 9: [IME]}, cap=3)               # "\n\n"
    assert _ids(r) == ([A, A, 271] + FINAL + [IME], 3, "stop")
    r = _emulate(tok, {7: [IME]}, cap=0)                         # last token "think" -> "\n"
    assert _ids(r) == ([NL] + FINAL + [IME], 0, "stop")
    r = _emulate(tok, {0: [NL], 7: [IME]}, cap=1)                # the model's own "\n" is the 1 token
    assert _ids(r) == ([NL] + FINAL + [IME], 1, "stop")


def test_emulation_global_cap_across_rounds(tok):
    # cap 4 counts the extensions: A, Wait, A, Wait -> the cap is reached inside the 3rd round
    r = _emulate(tok, {1: [IME, A], 3: [IMS, B], 11: [IME]}, cap=4, num_wait=3)
    assert _ids(r) == ([A, W, A, W, NL] + FINAL + [IME], 4, "stop")
    # a stop at the last allowed position: "Hmm" fills the cap exactly
    r = _emulate(tok, {1: [IMS, B], 9: [IME]}, cap=2, num_wait=1, extension="Hmm")
    assert _ids(r) == ([A, 80022, NL] + FINAL + [IME], 2, "stop")
    # a multi-token extension is cut at the cap ("Wait," of "Wait, let me check")
    r = _emulate(tok, {1: [IME, B], 10: [IME]}, cap=3, num_wait=1, extension="Wait, let me check")
    assert _ids(r) == ([A, W, 11, NL] + FINAL + [IME], 3, "stop")


def test_emulation_context_limit_and_padding(tok):
    p = len(tok.prompt_ids("q"))
    r = _emulate(tok, {}, cap=3, max_model_len=p + 12)           # the answer never stops
    assert _ids(r) == ([A, A, A, NL] + FINAL + [A, A], 3, "length")
    r = _emulate(tok, {}, cap=None, max_model_len=p + 5)         # no cap: thinking fills the context
    assert _ids(r) == ([A] * 5, 5, "length")
    # a padded id (>= the tokenizer's 151,665) on top is never chosen, in thinking or answer
    r = _emulate(tok, {0: [151900, B], 1: [151700, IME, C], 3: [151935, IME]}, cap=10)
    assert _ids(r) == ([B, IMS, ANS, IME], 1, "stop")
    assert [k for k, *_ in r.events].count("pad-masked") == 3


def test_emulation_answer_phase(tok):
    # <|im_start|> is an ordinary token in the answer; <|endoftext|> ends it and is kept
    r = _emulate(tok, {0: [IME, A], 2: [NL], 3: [IMS], 4: [B], 5: [EOT]}, cap=10)
    assert _ids(r) == ([IMS, ANS, NL, IMS, B, EOT], 0, "stop")


def test_emulation_endoftext_inside_thinking_stays(tok):
    # s1 keeps an <|endoftext|> that ends a round (vLLM keeps EOS ids in token_ids; s1 strips only
    # <|im_start|> / <|im_end|>); it counts as a thinking token; the delimiter follows it
    r = _emulate(tok, {0: [NL], 1: [EOT, A], 4: [B], 5: [IME]}, cap=10)
    assert _ids(r) == ([NL, EOT, IMS, ANS, B, IME], 2, "stop")
    # ... or "Wait", then a new round whose first token may not end thinking
    r = _emulate(tok, {1: [EOT, B], 3: [IME, C], 4: [IMS, C], 6: [IME]}, cap=10, num_wait=1)
    assert _ids(r) == ([A, EOT, W, C, IMS, ANS, IME], 4, "stop")
    # at the cap: the extension is cut to nothing and the forced end follows (with its "\n")
    r = _emulate(tok, {1: [EOT], 9: [IME]}, cap=2, num_wait=1)
    assert _ids(r) == ([A, EOT, NL] + FINAL + [IME], 2, "stop")


def test_emulation_minimum(tok):
    # stops are banned while fewer than min_think thinking tokens are written
    r = _emulate(tok, {0: [IME, A], 1: [IMS, B], 2: [IME], 5: [EOT]}, cap=10, min_think=2)
    assert _ids(r) == ([A, B, IMS, ANS, A, EOT], 2, "stop")
    assert [k for k, *_ in r.events].count("min-masked") == 2


TO, TC = 151665, 151666                 # <think>, </think> of the stand-in tokenizer
THINK_FINAL = [TC, 271]                 # "</think>\n\n" ("\n\n" is one token)


def test_think_format_ids(ttok):
    assert ttok.encode("<think>") == [TO] and ttok.encode("</think>") == [TC]
    assert ttok.final_ids == THINK_FINAL and ttok.delim_ids == (TC,) and ttok.start_ids == (TO, NL)
    assert ttok.prompt_ids("q")[-2:] == [TO, NL]
    assert ttok.tok.render_prompt("q") == THINK_PROMPT_TEMPLATE.format(question="q")


def test_think_format_natural_end_cap_minimum_extensions(ttok):
    t = ttok
    # natural end: </think> stays (the delimiter is </think> itself), the answer follows
    r = _emulate(t, {0: [NL], 1: [TC, A], 2: [B], 3: [IME]}, cap=10)
    assert _ids(r) == ([NL, TC, B, IME], 1, "stop")
    # cap: "\n</think>\n\n", its "\n" only when the thinking does not end with one
    r = _emulate(t, {6: [IME]}, cap=3)
    assert _ids(r) == ([A, A, A, NL] + THINK_FINAL + [IME], 3, "stop")
    r = _emulate(t, {2: [624], 5: [IME]}, cap=3)
    assert _ids(r) == ([A, A, 624] + THINK_FINAL + [IME], 3, "stop")
    # minimum: </think> banned below 2 thinking tokens
    r = _emulate(t, {0: [TC, A], 1: [TC, B], 2: [TC], 4: [IME]}, cap=10, min_think=2)
    assert _ids(r) == ([A, B, TC, A, IME], 2, "stop")
    # extension: </think> dropped, "Wait" appended, the next token may not end thinking
    r = _emulate(t, {0: [TC, A], 1: [TC, B], 2: [TC, C], 3: [TC, C], 4: [B], 5: [IME]}, cap=10, num_wait=1)
    assert _ids(r) == ([A, W, C, TC, B, IME], 3, "stop")
    # <|im_end|> also ends thinking (dropped); <|endoftext|> stays
    r = _emulate(t, {0: [IME], 2: [IME]}, cap=10)
    assert _ids(r) == ([TC, A, IME], 0, "stop")
    r = _emulate(t, {0: [EOT], 2: [IME]}, cap=10)
    assert _ids(r) == ([EOT, TC, IME], 1, "stop")
    # <|im_start|> is an ordinary thinking token in this format
    r = _emulate(t, {0: [IMS], 1: [TC], 3: [IME]}, cap=10)
    assert _ids(r) == ([IMS, TC, A, IME], 1, "stop")


def test_auto_cap_formula():
    assert auto_cap(320, [[0] * 40, [0] * 52, [0] * 7], 6) == 320 - 52 - 6 - 100


# ============================================================================ tests: scenario coverage
def _coverage(all_runs) -> collections.Counter:
    """Number of scenarios that hit each category (a scenario counts once per category)."""
    total = collections.Counter()
    for r in all_runs:
        c = collections.Counter()
        s, e = r.scenario, r.expected
        c[f"budget:{s.budget_kind}"] += 1
        c[f"num_wait:{s.num_wait}"] += 1
        c[f"extension:{s.extension!r}"] += 1
        kinds = [(k, n, d) for k, n, d in e.events]
        for k, n, d in kinds:
            if k == "min1-masked":
                c[f"min_tokens=1 masked a stop ({d})"] += 1
            elif k == "ext":
                c["extension inserted"] += 1
                if d:
                    c[f"extension {d}"] += 1
            elif k == "cap-end":
                c[f"cap end ({d})"] += 1
                if n == 0:
                    c["cap end with 0 thinking tokens"] += 1
            elif k == "natural-end":
                c["natural end"] += 1
                if n == 0:
                    c["natural end at the first token"] += 1
            elif k == "pad-masked":
                c["padded id masked"] += 1
            elif k == "kept-end":
                c["<|endoftext|> kept in thinking"] += 1
            elif k == "min-masked":
                c["minimum masked a stop"] += 1
            elif k == "answer-stop":
                c["answer stop " + ("<|im_end|>" if d == 151645 else "<|endoftext|>")] += 1
            elif k == "context-limit":
                c[f"context limit ({d})"] += 1
            elif k == "im_start-in-answer":
                c["<|im_start|> in the answer"] += 1
        if any(k == "stop" and n == 0 for k, n, _ in kinds) or any(
                k == "min1-masked" and d == "first" for k, n, d in kinds):
            c["stop attempt at the first token"] += 1
        total.update(set(c))
    return total


def test_scenario_coverage(emulated, think_runs):
    """Over both formats' scenarios (the categories do not depend on the format)."""
    all_runs = [r for b in emulated["main"] for r in b] + emulated["prefix"] + think_runs["runs"]
    c = _coverage(all_runs)
    need = ["budget:zero", "budget:one", "budget:small", "budget:medium", "budget:large", "budget:huge",
            "budget:auto", "num_wait:0", "num_wait:4", "extension:''", "extension:'Hmm'",
            "extension:'Alternatively'", "extension:'Wait'", "extension:'Wait, let me check'",
            "min_tokens=1 masked a stop (first)", "min_tokens=1 masked a stop (after-ext)",
            "min_tokens=1 masked a stop (after-empty-ext)", "extension inserted", "extension cut",
            "extension fills-cap", "cap end (nl-inserted)", "cap end (ends-with-newline)",
            "cap end with 0 thinking tokens", "natural end", "natural end at the first token",
            "padded id masked", "answer stop <|im_end|>", "answer stop <|endoftext|>", "context limit (answer)",
            "<|im_start|> in the answer", "stop attempt at the first token", "<|endoftext|> kept in thinking",
            "minimum masked a stop"]
    report = "\n".join(f"  {k}: {v}" for k, v in sorted(c.items()))
    assert len(all_runs) - len(emulated["prefix"]) >= 180   # s1 main batches + <think> batch
    missing = [k for k in need if c[k] < 3]
    assert not missing, f"scenario categories hit fewer than 3 times: {missing}\ncoverage:\n{report}"
    print(f"\ncoverage over {len(all_runs)} scenarios (scenarios per category):\n{report}")


# ============================================================================ tests: engine vs s1
def test_engine_matches_s1_emulation_think_format(think_runs, ttok):
    """The <think> format (stand-in tokenizer, detected by the engine): the same rules, the same
    tokens as the emulation, over a batch of seeded scenarios."""
    runs = think_runs["runs"]
    print(f"\ntimings (s): {think_runs['timings']}")
    c = _coverage(runs)
    need = ["cap end (nl-inserted)", "cap end (ends-with-newline)", "natural end", "extension inserted",
            "min_tokens=1 masked a stop (first)", "minimum masked a stop", "<|endoftext|> kept in thinking",
            "budget:auto", "answer stop <|im_end|>"]
    missing = [k for k in need if c[k] < 1]
    assert not missing, f"<think> scenarios miss {missing}: {sorted(c.items())}"
    msg = summarize(ttok, runs, "engine, <think> format (stand-in tokenizer)")
    assert msg is None, msg


def test_engine_prompt_matches_s1(runs, tok):
    bad = [r for r in runs["main"] if r.engine is not None and list(r.engine.prompt_token_ids) != r.prompt_ids]
    if bad:
        r = bad[0]
        d = first_diff(r.prompt_ids, list(r.engine.prompt_token_ids))
        lo = max(0, d - 3)
        pytest.fail(f"{len(bad)} of {len(runs['main'])} engine prompts differ from s1's; e.g. question "
                    f"{r.scenario.question!r} at {d}:\n  s1    : {tok.show(r.prompt_ids[lo:d + 3], lo)}"
                    f"\n  engine: {tok.show(list(r.engine.prompt_token_ids)[lo:d + 3], lo)}")


def test_engine_matches_s1_emulation(runs, tok):
    print(f"\ntimings (s): {runs['timings']}")
    msg = summarize(tok, runs["main"], "engine (no prefix caching, page_size 16, context 320)")
    assert msg is None, msg


def test_engine_matches_s1_emulation_prefix_caching_small_pages(runs, tok):
    msg = summarize(tok, runs["prefix"],
                    f"engine (prefix caching, page_size 4, max_model_len {PREFIX_LEN}, run twice; "
                    f"stats of the 2nd call {runs['prefix_stats']})")
    assert msg is None, msg


def test_engine_with_the_triton_rules_kernel_matches_s1_emulation(emulated, tok):
    """The same scenarios through the engine with budget forcing applied by the fused Triton
    kernel (its rules pass, in the interpreter) instead of the torch reference: the sampling
    candidates come from the reference sampler (the kernel's sampling pass over a 151,936-id
    vocabulary is too slow for the interpreter here; tests/kernels/test_sampling.py checks it against
    the reference), the rules from the kernel. One batch of scenarios."""
    import types

    pytest.importorskip("triton")
    import s1.kernels.sampling as triton_sampling
    from s1.infer import LLM
    from s1.kernels import force_state as fs
    from s1.kernels import reference

    def sample_and_force(logits, rows, tables, vocab_size, pad_id, given=None):
        if given is None:
            st = tables.state
            given = reference.gumbel_argmax(logits, tables.fparams[rows, fs.INV_TEMP], st[rows, fs.SEED],
                                            st[rows, fs.OUT_COUNT], vocab_size, tables.think_end)
        return triton_sampling.sample_and_force(None, rows, tables, vocab_size, pad_id, given)

    ops = types.SimpleNamespace(**{k: getattr(reference, k) for k in dir(reference) if not k.startswith("_")})
    ops.sample_and_force = sample_and_force
    llm = LLM(model=ContextLogitsModel(emulated["cfg"], emulated["book"]), tokenizer=tok.tok, device="cpu",
              enable_prefix_caching=False, page_size=16, kernels="torch")
    llm.engine.budget.ops = ops
    runs = [dataclasses.replace(r, engine=None, engine_error=None) for r in emulated["main"][0]]
    engine_batch(llm, runs)
    msg = summarize(tok, runs, "engine with the Triton budget-forcing kernel (rules pass)")
    assert msg is None, msg
