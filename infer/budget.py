"""Sampling and the budget-forcing state machine, on device, one step for a batch of requests.

s1 (s1-reference §3) runs generation N+1 times and re-prefills the context at every forced
continuation. Here every request carries a small state in device tensors and each decode step
samples and applies the rules in the same batched tensor ops, with no host round trip:

    phase        THINK -> (FORCE: emit a fixed token sequence) -> ... -> ANSWER -> DONE
    think_used   thinking tokens so far (generated + inserted extension tokens)
    waits_left   extensions still allowed;  waits_used for reporting
    force_kind / force_pos   which forced sequence (extension | end-of-thinking | answer
                 delimiter) is being emitted and how far
    answer_used  sampled answer tokens;  out_count  all output tokens

The exact rules are documented in infer/sampling.py. Forced tokens still go through the model
(their K/V are needed); their logits are simply ignored.

Sampling is an exponential race in its Gumbel form: token = argmax(logits * (1/T) + g) with
g = -log(-log u), u ~ U(0,1). u comes from a counter-based hash of (seed, output position,
vocab id), so a request's samples depend only on its own seed and history -- not on the batch it
shares, on preemption, or on a host-side generator -- and no device-host sync is needed.
Ids >= the tokenizer's real vocabulary (padded embedding rows) are never produced. Unfiltered
sampling (temperature, no top-k/top-p) is one fused pass over the logits, `gumbel_argmax` from
the kernel switch (Triton on GPU: kernels/sampling.py; torch reference on CPU), which also
returns the sample with the end-of-thinking ids masked; greedy and top-k/top-p batches use
torch ops (`_sample_torch`; top-p needs a sort).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

import kernels

# the counter-based noise lives with the sampling kernels (kernels/reference.py, kernels/sampling.py)
from kernels.reference import uniform_noise

THINK, FORCE, ANSWER, DONE = 0, 1, 2, 3
F_EXT, F_END, F_DELIM = 0, 1, 2
FIN_NONE, FIN_STOP, FIN_ANSWER_LEN, FIN_MAX_TOKENS = 0, 1, 2, 3
FINISH_REASONS = {FIN_STOP: "stop", FIN_ANSWER_LEN: "length", FIN_MAX_TOKENS: "length"}
_BIG = 2 ** 62


@dataclass
class SpecialTokens:
    """Token ids the rules need, resolved by name from the tokenizer (see `from_tokenizer`)."""
    think_end_ids: list[int]       # ids that end thinking: <|im_start|>, <|im_end|>, <|endoftext|>
    answer_stop_ids: list[int]     # default answer stops: <|im_end|>, <|endoftext|>
    delimiter_ids: list[int]       # tokens of "<|im_start|>answer\n"
    pad_id: int                    # emitted (and ignored) by finished rows
    vocab_size: int                # real vocabulary; logits beyond it are masked

    @classmethod
    def from_tokenizer(cls, tok) -> "SpecialTokens":
        try:
            im_start, im_end, eot = (tok.token_id(n) for n in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
        except KeyError as e:
            raise ValueError(f"the tokenizer lacks a special token the engine needs "
                             f"(<|im_start|>, <|im_end|>, <|endoftext|>): {e}") from None
        return cls(think_end_ids=[im_start, im_end, eot], answer_stop_ids=[im_end, eot],
                   delimiter_ids=tok.encode("<|im_start|>answer\n"), pad_id=eot,
                   vocab_size=tok.vocab_size)


@dataclass
class RequestRules:
    """One request's rules as token ids (built by the LLM from SamplingParams + tokenizer)."""
    thinking: bool = True                  # start in the thinking phase (else plain generation)
    max_think: int | None = None
    min_think: int = 0
    num_wait: int = 0
    extension_ids: list[int] = field(default_factory=list)
    end_ids: list[int] = field(default_factory=list)
    max_answer: int | None = None
    max_tokens: int | None = None
    stop_ids: list[int] = field(default_factory=list)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


def perturbed_scores(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                     top_p: torch.Tensor, seed: torch.Tensor, pos: torch.Tensor,
                     any_random: bool = True, any_filter: bool = True) -> torch.Tensor:
    """Scores whose argmax is the sample: raw logits for greedy rows (temperature 0), else
    top-k/top-p-filtered logits * (1/T) plus Gumbel noise. logits [B, V] fp32 (already
    vocab-masked). any_random / any_filter are host-known batch properties that skip unused work.
    The torch path for filtered batches (it needs a sort); unfiltered sampling goes through the
    fused `gumbel_argmax` op (kernels/sampling.py), which draws the same noise and scales the same way."""
    if not any_random:
        return logits
    greedy = temperature <= 0
    x = logits * torch.where(greedy, torch.ones_like(temperature), temperature).reciprocal()[:, None]
    if any_filter:
        sorted_x, order = x.sort(dim=-1, descending=True)
        probs = sorted_x.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        rank = torch.arange(x.shape[1], device=x.device)[None, :]
        remove = (mass_before >= top_p[:, None]) | ((top_k[:, None] > 0) & (rank >= top_k[:, None]))
        remove[:, 0] = False
        x = torch.empty_like(x).scatter_(1, order, sorted_x.masked_fill(remove, float("-inf")))
    u = uniform_noise(seed, pos, x.shape[1])
    g = -torch.log(-torch.log(u))
    return torch.where(greedy[:, None], logits, x + g)


class BudgetState:
    """Device-resident state for up to `capacity` requests (row r = request r of one generate
    call) plus one dummy row (index `dummy_row`, always DONE) that padding rows of a CUDA-graph
    batch point at. The tensors keep their addresses across `load` calls, so graphs that
    captured `step` stay valid from one generate call to the next."""

    def __init__(self, rules: list[RequestRules], special: SpecialTokens, device,
                 capacity: int | None = None, max_forced: int = 16, max_stops: int = 8):
        self.device = torch.device(device)
        self.special = special
        self.capacity = max(len(rules), capacity or 0, 1)
        self.lmax = max(max_forced, *(len(s) for r in rules for s in self._forced_of(r)), 1)
        self.smax = max(max_stops, *(len(r.stop_ids) for r in rules), 1)
        self.dummy_row = self.capacity
        n, dev = self.capacity + 1, self.device
        i64 = dict(dtype=torch.int64, device=dev)
        for name in ("max_think", "min_think", "max_answer", "max_tokens", "top_k", "seed", "phase",
                     "think_used", "waits_left", "waits_used", "force_kind", "force_pos", "answer_used",
                     "out_count", "finish", "last_token"):
            setattr(self, name, torch.zeros(n, **i64))
        self.temperature = torch.zeros(n, dtype=torch.float32, device=dev)
        self.top_p = torch.ones(n, dtype=torch.float32, device=dev)
        self.forced = torch.zeros(n, 3, self.lmax, **i64)
        self.forced_len = torch.zeros(n, 3, **i64)
        self.stop = torch.full((n, self.smax), -1, **i64)
        self.think_end = torch.tensor(special.think_end_ids, **i64)
        if not self.load(rules):
            raise AssertionError("BudgetState sized for these rules cannot hold them (bug)")

    def _forced_of(self, r: RequestRules) -> list[list[int]]:
        return [r.extension_ids, r.end_ids, self.special.delimiter_ids]

    def fits(self, rules: list[RequestRules]) -> bool:
        return (len(rules) <= self.capacity
                and all(len(s) <= self.lmax for r in rules for s in self._forced_of(r))
                and all(len(r.stop_ids) <= self.smax for r in rules))

    def load(self, rules: list[RequestRules]) -> bool:
        """Reset every row for a new batch of requests (in place). False if they do not fit."""
        if not self.fits(rules):
            return False
        n, k = self.capacity + 1, len(rules)
        self.n = k
        big = lambda v: _BIG if v is None else v  # noqa: E731

        def put(name, vals, fill, dtype=torch.int64):
            host = torch.full((n,), fill, dtype=dtype)
            if vals:
                host[:k] = torch.tensor(vals, dtype=dtype)
            getattr(self, name).copy_(host)

        put("max_think", [big(r.max_think) for r in rules], 0)
        put("min_think", [r.min_think for r in rules], 0)
        put("max_answer", [big(r.max_answer) for r in rules], 0)
        put("max_tokens", [big(r.max_tokens) for r in rules], _BIG)
        put("temperature", [float(r.temperature) for r in rules], 0.0, torch.float32)
        put("top_k", [r.top_k for r in rules], 0)
        put("top_p", [float(r.top_p) for r in rules], 1.0, torch.float32)
        put("seed", [r.seed for r in rules], 0)
        put("phase", [THINK if r.thinking else ANSWER for r in rules], DONE)  # unused rows: DONE
        put("waits_left", [r.num_wait for r in rules], 0)
        for name in ("think_used", "waits_used", "force_kind", "force_pos", "answer_used", "out_count",
                     "finish", "last_token"):
            getattr(self, name).zero_()
        forced = torch.zeros(n, 3, self.lmax, dtype=torch.int64)
        flen = torch.zeros(n, 3, dtype=torch.int64)
        stop = torch.full((n, self.smax), -1, dtype=torch.int64)
        for i, r in enumerate(rules):
            for j, seq in enumerate(self._forced_of(r)):
                forced[i, j, :len(seq)] = torch.tensor(seq, dtype=torch.int64)
                flen[i, j] = len(seq)
            stop[i, :len(r.stop_ids)] = torch.tensor(r.stop_ids, dtype=torch.int64)
        self.forced.copy_(forced)
        self.forced_len.copy_(flen)
        self.stop.copy_(stop)
        # host-known batch properties: skip the noise / the sort when no row needs them
        self.any_random = any(r.temperature > 0 for r in rules)
        self.any_filter = any(r.temperature > 0 and (r.top_k > 0 or r.top_p < 1.0) for r in rules)
        # rows that may sample with the end-of-thinking tokens masked out (minimum not met, or an
        # empty extension string: "suppress the end, nothing inserted")
        self.any_mask = any(r.thinking and (r.min_think > 0 or (r.num_wait > 0 and not r.extension_ids))
                            for r in rules)
        if k:
            self._transitions(torch.arange(k, device=self.device))  # max_think == 0, ...
        return True

    # ------------------------------------------------------------------ helpers
    def _transitions(self, rows: torch.Tensor) -> None:
        """Phase changes that follow from counters (run at init and after every step)."""
        ph = self.phase[rows]
        cap = (ph == THINK) | ((ph == FORCE) & (self.force_kind[rows] == F_EXT))
        cap &= self.think_used[rows] >= self.max_think[rows]
        ph = torch.where(cap, FORCE, ph)
        self.force_kind[rows] = torch.where(cap, F_END, self.force_kind[rows])
        self.force_pos[rows] = torch.where(cap, 0, self.force_pos[rows])
        fin = self.finish[rows]
        ans_done = (ph == ANSWER) & (self.answer_used[rows] >= self.max_answer[rows])
        fin = torch.where(ans_done, FIN_ANSWER_LEN, fin)
        ph = torch.where(ans_done, DONE, ph)
        tok_done = (ph != DONE) & (self.out_count[rows] >= self.max_tokens[rows])
        fin = torch.where(tok_done, FIN_MAX_TOKENS, fin)
        ph = torch.where(tok_done, DONE, ph)
        self.phase[rows] = ph
        self.finish[rows] = fin

    def _sample_torch(self, logits, temp, top_k, top_p, seed, pos):
        """(t_u, t_m) for greedy batches and batches with top-k/top-p (torch ops; the sort)."""
        x = logits.float()
        if x.shape[1] > self.special.vocab_size:
            x[:, self.special.vocab_size:] = float("-inf")   # padded embedding rows never win
        z = perturbed_scores(x, temp, top_k, top_p, seed, pos, self.any_random, self.any_filter)
        t_u = z.argmax(dim=-1)                                         # unconstrained sample
        if not self.any_mask:
            return t_u, t_u                                            # t_m never used (no row masks)
        if self.any_filter:
            # top-k / top-p act on the distribution with the end tokens removed (renormalized), so
            # the nucleus is never empty; same noise as t_u (same position, same seed)
            x_m = x.index_fill(1, self.think_end, float("-inf"))
            return t_u, perturbed_scores(x_m, temp, top_k, top_p, seed, pos, True, True).argmax(dim=-1)
        # greedy: the best token that is not an end token
        return t_u, z.index_fill(1, self.think_end, float("-inf")).argmax(dim=-1)

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """logits [B, V] for requests `rows` [B] (int64). Samples, applies the rules, advances the
        state. Returns info [6, B] int64: token, emitted (row was not finished), done, finish code,
        think_used, waits_used. Tokens are also kept in `last_token` (next decode's input)."""
        sp = self.special
        B, V = logits.shape
        ph = self.phase[rows]
        tu, wl, wu = self.think_used[rows], self.waits_left[rows], self.waits_used[rows]
        au, oc = self.answer_used[rows], self.out_count[rows]
        kind, fpos = self.force_kind[rows], self.force_pos[rows]
        flen = self.forced_len[rows]                                   # [B, 3]

        temp, top_k, top_p, seed = self.temperature[rows], self.top_k[rows], self.top_p[rows], self.seed[rows]
        if self.any_random and not self.any_filter:
            # one fused pass over the logits (Triton on GPU): t_u unconstrained, t_m without the
            # end-of-thinking ids; padded ids (>= vocab_size) never win
            inv_t = torch.where(temp > 0, temp.reciprocal(), torch.zeros_like(temp))
            t_u, t_m = kernels.get_ops(logits.device).gumbel_argmax(logits, inv_t, seed, oc, sp.vocab_size,
                                                                    self.think_end)
        else:
            t_u, t_m = self._sample_torch(logits, temp, top_k, top_p, seed, oc)

        thinking = ph == THINK
        below_min = tu < self.min_think[rows]
        is_end = torch.isin(t_u, self.think_end)
        ext_len = flen[:, F_EXT]
        attempt = thinking & ~below_min & is_end                       # model tries to end thinking
        wait = attempt & (wl > 0)
        wait_text = wait & (ext_len > 0)
        wait_empty = wait & (ext_len == 0)                             # "nothing": just mask the end
        to_answer = attempt & (wl == 0)

        tok = torch.where(thinking & (below_min | wait_empty), t_m, t_u)
        tok = torch.where(wait_text, self.forced[rows, F_EXT, 0], tok)
        tok = torch.where(to_answer, self.forced[rows, F_DELIM, 0], tok)
        wl = wl - wait.long()
        wu = wu + wait.long()
        tu = tu + (thinking & ~to_answer).long()
        new_ph = ph.clone()
        # multi-token extension / delimiter: emit the rest from the forced table
        more_ext = wait_text & (ext_len > 1)
        more_delim = to_answer & (flen[:, F_DELIM] > 1)
        new_ph = torch.where(more_ext | more_delim, FORCE, new_ph)
        new_ph = torch.where(to_answer & ~more_delim, ANSWER, new_ph)
        kind = torch.where(more_ext, F_EXT, torch.where(more_delim, F_DELIM, kind))
        fpos = torch.where(more_ext | more_delim, 1, fpos)

        # forcing rows: emit forced[kind][pos]
        forcing = ph == FORCE
        ftok = self.forced[rows, kind.clamp(0, 2), fpos.clamp(0, self.forced.shape[2] - 1)]
        tok = torch.where(forcing, ftok, tok)
        tu = tu + (forcing & (kind == F_EXT)).long()
        fpos_next = fpos + 1
        fdone = forcing & (fpos_next >= flen.gather(1, kind.clamp(0, 2)[:, None])[:, 0])
        new_ph = torch.where(fdone & (kind == F_EXT), THINK, new_ph)
        new_ph = torch.where(fdone & (kind != F_EXT), ANSWER, new_ph)
        fpos = torch.where(forcing, fpos_next, fpos)

        # answer rows: stop tokens
        answering = ph == ANSWER
        stop_hit = answering & (t_u[:, None] == self.stop[rows]).any(dim=1)
        au = au + answering.long()
        fin = self.finish[rows]
        new_ph = torch.where(stop_hit, DONE, new_ph)
        fin = torch.where(stop_hit, FIN_STOP, fin)

        done_before = ph == DONE
        tok = torch.where(done_before, sp.pad_id, tok)
        oc = oc + (~done_before).long()

        self.phase[rows] = new_ph
        self.think_used[rows] = tu
        self.waits_left[rows] = wl
        self.waits_used[rows] = wu
        self.force_kind[rows] = kind
        self.force_pos[rows] = fpos
        self.answer_used[rows] = au
        self.out_count[rows] = oc
        self.finish[rows] = fin
        self._transitions(rows)
        self.last_token[rows] = tok
        new_done = self.phase[rows] == DONE
        return torch.stack([tok, (~done_before).long(), new_done.long(), self.finish[rows],
                            self.think_used[rows], self.waits_used[rows]])
