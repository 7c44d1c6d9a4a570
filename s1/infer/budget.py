"""Budget forcing on the device: each request's rules as token ids, its state in device tables, and
one sampling op per decode step that samples and applies the rules for the whole batch.

s1 runs generation N+1 times and re-prefills the context at every forced continuation. Here every
request owns a row (its slot) of the tables of s1/kernels/force_state.py, and every decode step calls
`sample_and_force` from the kernel switch (s1/kernels/sampling.py: one fused Triton pass over the
logits plus one program per row for the rules; s1/kernels/reference.py: the torch specification, the
CPU path). The rules, token for token, are stated in s1/kernels/force_state.py; what they mean for a
user is in s1/infer/sampling.py. Forced tokens still go through the model (their K/V are needed);
their logits are ignored.

Sampling is the Gumbel-max race: token = argmax(logits / T + g), g = -log(-log u), u a
counter-based hash of (seed, output position, vocab id): a request's samples depend only on its own
seed and history, never on the batch, preemption or a host generator, and need no host sync.
Padded vocabulary ids (>= the tokenizer's real vocabulary) never win. Top-k / top-p rows take a
sort-based torch pre-pass (`filtered_choices`) and then the same rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from s1.kernels import force_state as fs
from s1.model.tokenizer import IM_END, ENDOFTEXT

FINISH_REASONS = {fs.FIN_STOP: "stop", fs.FIN_ANSWER_LEN: "length", fs.FIN_MAX_TOKENS: "length"}


@dataclass
class SpecialTokens:
    """Token ids the rules need, resolved by name from the tokenizer and the thinking format
    (`from_tokenizer`; s1/model/thinking.py)."""
    think_end_ids: list[int]       # single ids that end thinking (s1: <|im_start|>, <|im_end|>, <|endoftext|>)
    answer_stop_ids: list[int]     # default answer stops: <|im_end|>, <|endoftext|>
    delimiter_ids: list[int]       # "<|im_start|>answer": replaces a natural end of thinking
    newline_id: int                # "\n": the conditional first token of the forced end
    pad_id: int                    # emitted (and ignored) by finished rows
    vocab_size: int                # real vocabulary; logits beyond it are masked
    newline_table: bytes = b""     # per id: 1 if its text ends with "\n"
    # end rules (s1/kernels/force_state.py end_rules): (id, predecessor or -1, keep); None: every
    # think_end id, dropped
    end_rules: list[tuple[int, int, int]] | None = None

    @property
    def has_pair_end(self) -> bool:
        return any(p >= 0 for _, p, _ in (self.end_rules or ()))

    @classmethod
    def from_tokenizer(cls, tok, fmt=None) -> "SpecialTokens":
        """fmt: the ThinkingFormat (default: the tokenizer's, s1/model/thinking.py)."""
        from s1.model import thinking
        fmt = fmt or getattr(tok, "thinking_format", None) or thinking.detect(tok)
        try:
            eot = tok.token_id(ENDOFTEXT)
        except KeyError:
            eot = None
        try:
            rules = [(i, p, 0) for i, p in fmt.stop_rules(tok)]
            kept = [tok.token_id(n) for n in fmt.kept_end_names(tok)]
            eos = [tok.token_id(n) for n in thinking.eos_names(tok)]
        except KeyError as e:
            raise ValueError(f"the tokenizer lacks a token of the thinking format: {e}") from None
        if not eos:
            raise ValueError(f"the tokenizer has none of the end-of-sequence tokens the engine needs "
                             f"({IM_END}, {ENDOFTEXT} or its eos_token)")
        rules += [(i, -1, 1) for i in kept]
        delim = tok.encode(fmt.end)
        for i, p, _ in rules:
            if p >= 0 and (len(delim) < 2 or delim[0] != p):
                raise ValueError(f"a two-token end of thinking ({tok.decode([p, i])!r}) needs a thinking end that "
                                 f"starts with {tok.decode([p])!r} and has a second token; got {fmt.end!r}")
        nl = tok.encode("\n")
        if len(nl) != 1:
            raise ValueError(f"the tokenizer encodes '\\n' as {len(nl)} tokens (expected one)")
        answer_stops = [i for i in eos if i != eot] + ([eot] if eot in eos else [])
        return cls(think_end_ids=[i for i, p, _ in rules if p < 0], answer_stop_ids=answer_stops,
                   delimiter_ids=delim, newline_id=nl[0], pad_id=eot if eot is not None else eos[-1],
                   vocab_size=tok.vocab_size, newline_table=tok.newline_table(), end_rules=rules)


@dataclass
class RequestRules:
    """One request's rules as token ids (built by the engine from SamplingParams + tokenizer)."""
    thinking: bool = True                  # start in the thinking phase (else plain generation)
    max_think: int | None = None           # resolved cap ("auto" already turned into a number)
    min_think: int = 0
    num_wait: int = 0
    extension_ids: list[int] = field(default_factory=list)
    end_ids: list[int] = field(default_factory=list)   # forced end of thinking
    end_skip_newline: bool = False         # end_ids[0] is "\n", dropped when thinking ends in one
    max_answer: int | None = None
    max_tokens: int | None = None          # all output tokens (the engine folds in the context limit)
    stop_ids: list[int] = field(default_factory=list)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    last_prompt_token: int = 0

    @property
    def filtered(self) -> bool:
        return self.temperature > 0 and (self.top_k > 0 or self.top_p < 1.0)


class StepResult(NamedTuple):
    """One decode step's outcome per batch row, read back from the op's [NUM_RESULT, B] tensor."""
    token: list[int]
    emitted: list[int]        # 1: the row was live and produced `token`
    done: list[int]           # 1: the request is finished now
    finish: list[int]         # finish code (s1/kernels/force_state.py FIN_*)
    thinking_tokens: list[int]
    waits_used: list[int]
    phase: list[int]          # phase after the step

    @classmethod
    def from_host(cls, t: torch.Tensor) -> "StepResult":
        r = t.tolist()                         # rows named by s1/kernels/force_state.py R_*
        return cls(token=r[fs.R_TOKEN], emitted=r[fs.R_EMITTED], done=r[fs.R_DONE], finish=r[fs.R_FINISH],
                   thinking_tokens=r[fs.R_THINK_USED], waits_used=r[fs.R_WAITS_USED], phase=r[fs.R_PHASE])

    @property
    def any_done(self) -> bool:
        return 1 in self.done


class BudgetState:
    """The force-state tables for `capacity` request slots plus one dummy slot (`dummy_row`, always
    DONE) that padding rows of a CUDA-graph batch point at. The tensors keep their addresses for
    the engine's lifetime, so captured graphs stay valid; `admit` writes a request's row."""

    def __init__(self, capacity: int, special: SpecialTokens, device, ops, max_forced: int = 32,
                 max_stops: int = 8, tp=None, model_vocab_size: int | None = None):
        """tp: the engine's TPGroup when its logits are a vocabulary shard (s1/infer/tensor_parallel.py),
        model_vocab_size: the model's (padded) vocabulary the shards split."""
        self.device = torch.device(device)
        self.special = special
        self.ops = ops
        self.tp, self.model_vocab_size = tp, model_vocab_size
        if tp is not None:
            from s1.infer.tensor_parallel import vocab_offset
            self.id_offset = vocab_offset(tp, model_vocab_size)
        self.capacity = capacity
        self.dummy_row = capacity
        self.lmax, self.smax = max_forced, max_stops
        n, dev = capacity + 1, self.device
        state = torch.zeros(n, fs.NUM_COLS, dtype=torch.int64, device=dev)
        state[:, fs.PHASE] = fs.DONE
        self.tables = fs.ForceTables(
            state=state,
            fparams=torch.zeros(n, 2, dtype=torch.float32, device=dev),
            forced=torch.zeros(n, 3, max_forced, dtype=torch.int64, device=dev),
            stop=torch.full((n, max_stops), -1, dtype=torch.int64, device=dev),
            think_end=torch.tensor(special.think_end_ids, dtype=torch.int64, device=dev),
            newline=torch.frombuffer(bytearray(special.newline_table or bytes(special.vocab_size)),
                                     dtype=torch.uint8).to(dev),
            end_rules=None if special.end_rules is None else
            torch.tensor(special.end_rules, dtype=torch.int64, device=dev).reshape(-1, 3).T.contiguous())
        self._filtered = [False] * n
        self._any_filtered = False   # some admitted slot (ever) samples with top-k / top-p

    # ------------------------------------------------------------------ admission
    def check(self, r: RequestRules) -> bool:
        """ValueError when a request's rules do not fit the tables. Returns whether the request
        starts in the answer phase (plain generation, or a zero thinking cap with nothing to
        force): its answer starts at output index 0."""
        for name, ids in (("extension", r.extension_ids), ("end_thinking", r.end_ids)):
            if len(ids) > self.lmax:
                raise ValueError(f"{name} is {len(ids)} tokens; at most {self.lmax} are supported")
        if len(r.stop_ids) > self.smax:
            raise ValueError(f"{len(r.stop_ids)} stop tokens; at most {self.smax} are supported")
        # the row must fit the tables (int64 state, fp32 parameters): checked when the request is
        # added, so admission inside a step cannot fail on it
        row, fps = self.row_values(r)
        names = {fs.MAX_THINK: "max_thinking_tokens", fs.MIN_THINK: "min_thinking_tokens",
                 fs.MAX_ANSWER: "max_answer_tokens", fs.MAX_TOKENS: "max_tokens", fs.WAITS_LEFT: "num_wait",
                 fs.TOP_K: "top_k", fs.SEED: "seed"}
        for col, v in enumerate(row):
            if not -2 ** 63 <= v < 2 ** 63:
                raise ValueError(f"{names.get(col, f'state column {col}')}={v} does not fit the device tables")
        if not all(math.isfinite(torch.tensor(v, dtype=torch.float32).item()) for v in fps):
            raise ValueError(f"temperature={r.temperature!r} / top_p={r.top_p!r}: not finite in fp32")
        return row[fs.PHASE] == fs.ANSWER or row[fs.FINISH] == fs.FIN_ANSWER_LEN

    def row_values(self, r: RequestRules) -> tuple[list[int], list[float]]:
        """The initial state row and fparams row of a request (host values)."""
        big = lambda v: fs.UNLIMITED if v is None else v  # noqa: E731
        row = [0] * fs.NUM_COLS
        row[fs.MAX_THINK], row[fs.MIN_THINK] = big(r.max_think), r.min_think
        row[fs.MAX_ANSWER], row[fs.MAX_TOKENS] = big(r.max_answer), big(r.max_tokens)
        row[fs.WAITS_LEFT], row[fs.TOP_K], row[fs.SEED] = r.num_wait, r.top_k, r.seed
        row[fs.END_SKIP_NL] = int(r.end_skip_newline)
        row[fs.LAST_TOKEN] = r.last_prompt_token
        row[fs.FORCE_LEN + fs.F_EXT] = len(r.extension_ids)
        row[fs.FORCE_LEN + fs.F_END] = len(r.end_ids)
        row[fs.FORCE_LEN + fs.F_DELIM] = len(self.special.delimiter_ids)
        # the phase at admission (the op's "limits reached" rules for a request that starts at one)
        if not r.thinking:
            row[fs.PHASE] = fs.ANSWER
        elif big(r.max_think) <= 0:
            nl = self.special.newline_table
            skip = int(r.end_skip_newline and bool(nl) and nl[r.last_prompt_token] == 1)
            row[fs.PHASE], row[fs.FORCE_KIND], row[fs.FORCE_POS] = fs.FORCE, fs.F_END, skip
            if skip >= len(r.end_ids):
                row[fs.PHASE] = fs.ANSWER
        else:
            row[fs.PHASE] = fs.THINK
            row[fs.MASK_NEXT] = int(r.num_wait > 0)   # s1: min_tokens=1 on its first round too
        if row[fs.PHASE] == fs.ANSWER and big(r.max_answer) <= 0:
            row[fs.PHASE], row[fs.FINISH] = fs.DONE, fs.FIN_ANSWER_LEN
        inv_t = 1.0 / r.temperature if r.temperature > 0 else 0.0
        return row, [inv_t, float(r.top_p)]

    def admit(self, slots: list[int], rules: list[RequestRules]) -> None:
        """Write the rows of newly admitted requests (one batched copy per table)."""
        if not slots:
            return
        k = len(slots)
        rows, fps = zip(*(self.row_values(r) for r in rules))
        forced = torch.zeros(k, 3, self.lmax, dtype=torch.int64)
        stop = torch.full((k, self.smax), -1, dtype=torch.int64)
        for i, r in enumerate(rules):
            for j, ids in ((fs.F_EXT, r.extension_ids), (fs.F_END, r.end_ids),
                           (fs.F_DELIM, self.special.delimiter_ids)):
                forced[i, j, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
            stop[i, :len(r.stop_ids)] = torch.tensor(r.stop_ids, dtype=torch.int64)
            self._filtered[slots[i]] = r.filtered
        self._any_filtered = any(self._filtered)
        idx = torch.tensor(slots, dtype=torch.int64).to(self.device)
        t = self.tables
        t.state.index_copy_(0, idx, torch.tensor(rows, dtype=torch.int64).to(self.device))
        t.fparams.index_copy_(0, idx, torch.tensor(fps, dtype=torch.float32).to(self.device))
        t.forced.index_copy_(0, idx, forced.to(self.device))
        t.stop.index_copy_(0, idx, stop.to(self.device))

    def filtered(self, slots) -> bool:
        """Does any of these slots sample with top-k / top-p (the sort pre-pass)?"""
        if not self._any_filtered:                # the common case costs nothing per sequence
            return False
        f = self._filtered
        return any(f[s] for s in slots)

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self, logits: torch.Tensor, rows: torch.Tensor, filtered: bool) -> torch.Tensor:
        """logits [B, V] for the requests in `rows` [B] (int64 slots). Samples, applies the rules,
        advances the state; returns the [NUM_RESULT, B] result (see StepResult).

        Tensor parallel (self.tp): logits are this rank's vocabulary shard [B, V / tp]. The sampling
        pass runs on the shard (global ids, the unsharded noise), one all-gather carries the per-row
        (score, id) partials of t_u and t_m, and the rules pass runs identically on every rank: the
        full logits are never gathered. Top-k / top-p batches are the exception: their sort
        pre-pass needs whole rows, so they all-gather the full logits [B, V] first."""
        sp, t = self.special, self.tables
        if self.tp is not None:
            if not filtered:
                return self.ops.sample_and_force(logits, rows, t, sp.vocab_size, sp.pad_id,
                                                 id_offset=self.id_offset, gather=self.tp.all_gather)
            from s1.infer.tensor_parallel import gather_logits
            logits = gather_logits(logits, self.tp, self.model_vocab_size)
        if filtered:
            st, fp = t.state, t.fparams
            given = self.ops.filtered_choices(logits, fp[rows, fs.INV_TEMP], st[rows, fs.TOP_K],
                                              fp[rows, fs.TOP_P], st[rows, fs.SEED], st[rows, fs.OUT_COUNT],
                                              sp.vocab_size, t.think_end)
            return self.ops.sample_and_force(None, rows, t, sp.vocab_size, sp.pad_id, given)
        return self.ops.sample_and_force(logits, rows, t, sp.vocab_size, sp.pad_id)
