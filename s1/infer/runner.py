"""Model runner: turns a scheduled batch into one forward + one `sample_and_force` step.

The model is called one way only: `model(input_ids, positions, kv_cache=cache,
logits_indices=..., ops=ops)`; the cache carries the step's layout (`StepMeta`).

Prefill batch: the not-yet-cached tokens of each sequence, packed ([T]); keys span [cached prefix
+ new] (bottom-right causal varlen attention). Only each sequence's last row goes through the LM
head (`logits_indices`). Decode batch: one token per sequence, read on the device from the budget
state's LAST_TOKEN column (the host never needs the sampled values to continue).

Block tables live on the device, one row per request slot, and are updated page by page as the
block manager hands pages out (`note_page`), never rebuilt. So does each slot's next decode input
(position, cache slot, context length: `_next`), set by the prefill and advanced on the device by
every decode step: a decode step sends only the batch's slots (one small copy).

On CUDA, decode steps replay CUDA graphs (forward + sampling + budget rules) captured lazily per
(batch-size bucket 1, 2, 4, 8, 16, 32, 64, ... up to max_num_seqs; whether the batch needs the
top-k/top-p pre-pass); padding rows write no K/V (slot -1) and step the budget's dummy row. The
tables the graphs read keep their addresses for the engine's lifetime. Disable with enforce_eager.
Under tensor parallelism the captured step holds the model's all-reduces and the sampler's
all-gather (NCCL collectives are capturable); every graph's warm-up runs them eagerly first, and
all ranks capture the same buckets in the same order (their batches are identical). Not yet run on
GPUs: no multi-GPU machine has been available.

Log-probabilities (a request with SamplingParams.logprobs): only in a step whose batch holds such a
request, the runner takes log_softmax of the raw logits in fp32 (the model's distribution, before
temperature, top-k/top-p and budget forcing) and gathers the emitted token's value and the top k
([B, V] fp32 once more, a top-k, a copy back that waits for the device); such a decode step runs
eagerly instead of replaying a CUDA graph. Steps without one pay nothing: `step_logprobs` is None.
"""
from __future__ import annotations

import numpy as np
import torch

from s1.common import profiling
from s1.infer.budget import BudgetState
from s1.infer.paged_cache import PagedKVCache, StepMeta
from s1.infer.request import Sequence
from s1.kernels import force_state as fs

_NP_INT = {torch.int64: np.int64, torch.int32: np.int32}

# rows of the device decode columns `ModelRunner._next` [NUM_NEXT_ROWS, slots + 1], one column per
# slot: what that slot's next decode step feeds. The invariant (stated and checked once, in
# tests/infer/test_runner.py::test_decode_columns_track_the_sequences): before each decode step,
# a running sequence with n tokens has column (slot, n - 1, cache slot of position n - 1, n).
NEXT_SLOT, NEXT_POS, NEXT_CACHE_SLOT, NEXT_CONTEXT = range(4)
NUM_NEXT_ROWS = 4
assert NEXT_SLOT == 0, "a decode step advances rows NEXT_POS: (all but the slot) in one slice"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class ModelRunner:
    def __init__(self, model, cache: PagedKVCache, budget: BudgetState, ops, max_num_seqs: int,
                 max_model_len: int, device, use_cuda_graphs: bool = False):
        self.model = model
        self.cache = cache
        self.budget = budget
        self.ops = ops
        self.device = torch.device(device)
        self.page_size = cache.page_size
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.max_pages_per_seq = _cdiv(max_model_len, cache.page_size)
        # one row per budget slot (+ the dummy slot): page ids in order
        self.block_tables = torch.zeros(budget.capacity + 1, self.max_pages_per_seq, dtype=torch.int32,
                                        device=self.device)
        self._page_updates: list[tuple[int, int, int]] = []
        # per slot, on the device: the decode-input column of the sequence's next decode step
        # (slot, position, cache slot, context length), set by its prefill, advanced by each decode
        # step on the device, and pointed at a new page when the block manager hands one out. The
        # dummy slot's column is the padding column (no K/V write, context 1). A decode step sends
        # only its slots; the step gathers their columns (inside the CUDA graph on a GPU).
        self._next = torch.zeros(NUM_NEXT_ROWS, budget.capacity + 1, dtype=torch.int64, device=self.device)
        pad = [0] * NUM_NEXT_ROWS
        pad[NEXT_SLOT], pad[NEXT_POS], pad[NEXT_CACHE_SLOT], pad[NEXT_CONTEXT] = budget.dummy_row, 0, -1, 1
        self._next[:, budget.dummy_row] = torch.tensor(pad)
        self.use_cuda_graphs = use_cuda_graphs and self.device.type == "cuda"
        self.graphs: dict[tuple[int, bool], tuple] = {}
        self._static = None
        self._pool = None
        self.step_logprobs = None   # the last run's (token logprob [B], top ids [B, k], top logprobs [B, k])

    def close(self) -> None:
        self.graphs.clear()
        self._static = self._pool = None
        self.model = self.cache = self.budget = None
        self.block_tables = self._next = None

    def _tensor(self, vals, dtype) -> torch.Tensor:
        # numpy turns a list of Python ints into an array ~3x faster than torch.tensor
        return self._to_device(np.array(vals, dtype=_NP_INT[dtype]))

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    # ------------------------------------------------------------------ block tables
    def note_page(self, seq: Sequence, index: int, page: int) -> None:
        """The block manager gave `seq` page `page` at position `index` of its table."""
        self._page_updates.append((seq.slot, index, page))

    def _flush_pages(self) -> None:
        """Write the pages handed out since the last step into the device block tables. A page
        handed out to a decoding sequence holds its next position, so its slot's next cache slot
        is the page's first (a prefill's pages are written over by prepare_prefill, which sets its
        sequences' whole columns afterwards)."""
        if self._page_updates:
            u = self._tensor(self._page_updates, torch.int64)
            self._page_updates.clear()
            self.block_tables[u[:, 0], u[:, 1]] = u[:, 2].to(torch.int32)
            self._next[NEXT_CACHE_SLOT, u[:, 0]] = u[:, 2] * self.page_size

    def _slot(self, seq: Sequence, pos: int) -> int:
        return seq.block_table[pos // self.page_size] * self.page_size + pos % self.page_size

    # ------------------------------------------------------------------ prefill
    def prepare_prefill(self, seqs: list[Sequence]):
        ids, pos, slots, cu_q, cu_k, gather, nxt = [], [], [], [0], [0], [], []
        any_cached = any(s.num_cached_tokens for s in seqs)
        for s in seqs:
            n, c = s.num_tokens, s.num_cached_tokens
            # the next decode step feeds the sampled token at position n (context n + 1); its
            # page exists unless n starts a new one (then that page's note sets the cache slot)
            nxt.append((s.slot, n, self._slot(s, n) if n < len(s.block_table) * self.page_size else -1, n + 1))
            ids.extend(s.token_ids[c:n])
            pos.extend(range(c, n))
            slots.extend(self._slot(s, p) for p in range(c, n))
            cu_q.append(cu_q[-1] + n - c)
            cu_k.append(cu_k[-1] + n)
            if any_cached:
                gather.extend(self._slot(s, p) for p in range(n))
        meta = StepMeta(
            is_prefill=True, slot_mapping=self._tensor(slots, torch.int64),
            cu_seqlens_q=self._tensor(cu_q, torch.int32), cu_seqlens_k=self._tensor(cu_k, torch.int32),
            max_seqlen_q=max(b - a for a, b in zip(cu_q, cu_q[1:])),
            max_seqlen_k=max(b - a for a, b in zip(cu_k, cu_k[1:])),
            gather_slots=self._tensor(gather, torch.int64) if any_cached else None)
        logits_idx = self._tensor([q - 1 for q in cu_q[1:]], torch.int64)
        cols = self._tensor(nxt, torch.int64).T                  # rows in NEXT_* order
        self._next.index_copy_(1, cols[NEXT_SLOT], cols)
        return self._tensor(ids, torch.int64), self._tensor(pos, torch.int64), meta, logits_idx

    # ------------------------------------------------------------------ decode
    def decode_inputs(self, seqs: list[Sequence], width: int | None = None) -> torch.Tensor:
        """The batch's slots (budget rows), [width] int64 on the device, padded with the dummy
        slot: all a decode step needs from the host (see `_next`)."""
        slots = [s.slot for s in seqs]
        if width and width > len(slots):
            slots += [self.budget.dummy_row] * (width - len(slots))
        return self._tensor(slots, torch.int64)

    # ------------------------------------------------------------------ one step
    @torch.inference_mode()
    def run(self, seqs: list[Sequence], is_prefill: bool) -> torch.Tensor:
        """Forward + sample + budget rules. Returns the [NUM_RESULT, B] step result (on device).
        Its phases report to the active profiling recorder (s1/common/profiling.py; no-ops when off)."""
        rec = profiling.active()
        with rec.phase("page_flush"):
            self._flush_pages()
        self.step_logprobs = None
        budget = self.budget
        k = max((s.logprobs for s in seqs if s.logprobs is not None), default=None)
        if is_prefill:
            with rec.phase("prepare_inputs"):
                filtered = budget.filtered(s.slot for s in seqs)
                rows = self._tensor([s.slot for s in seqs], torch.int64)
                ids, pos, meta, logits_idx = self.prepare_prefill(seqs)
            with rec.phase("prefill_forward"):
                logits = self._forward(ids, pos, meta, logits_idx)
            with rec.phase("sample_and_force"):
                return self._sample(logits, rows, filtered, k)
        if self.use_cuda_graphs and k is None:   # a decode batch is the running set: <= max_num_seqs rows
            return self._replay(seqs, budget.filtered(s.slot for s in seqs), rec)
        # the attention's bound: the longest context, from the host (reading it back would sync)
        with rec.phase("prepare_inputs"):
            filtered = budget.filtered(s.slot for s in seqs)
            rows = self.decode_inputs(seqs)
            max_context = max(s.num_tokens for s in seqs)
        return self._decode_step(rows, filtered, max_context, rec, k)

    def _sample(self, logits: torch.Tensor, rows: torch.Tensor, filtered: bool, k: int | None) -> torch.Tensor:
        """sample_and_force; with k (some request asked for logprobs) also `step_logprobs`."""
        if k is None:
            return self.budget.step(logits, rows, filtered)
        lp = torch.log_softmax(logits.float(), dim=-1)     # before the sampler can touch the logits
        result = self.budget.step(logits, rows, filtered)
        tok = result[fs.R_TOKEN].clamp(min=0, max=lp.shape[-1] - 1)
        token_lp = lp.gather(1, tok[:, None])[:, 0]
        top_lp, top_ids = lp.topk(k, dim=-1) if k else (lp[:, :0], tok[:, None][:, :0])
        self.step_logprobs = (token_lp.cpu(), top_ids.cpu(), top_lp.cpu())
        return result

    def _decode_step(self, rows: torch.Tensor, filtered: bool, max_context: int, rec=profiling.OFF,
                     logprobs_k: int | None = None) -> torch.Tensor:
        """The device part of a decode step, from the batch's slots `rows` [B] (decode_inputs):
        gather their decode columns and advance them (padding rows stay), gather the input tokens
        and block tables, forward, sample_and_force. The eager path runs it per step (max_context:
        the batch's longest context); a CUDA graph captures it once per batch bucket (max_context
        = max_model_len). Profiling: "decode_forward" covers the gathers and the forward (as a
        CUDA-graph replay does)."""
        with rec.phase("decode_forward"):
            inp = self._next.index_select(1, rows)
            # every row after the slot advances by one position (padding rows stay)
            self._next[NEXT_POS:, rows] = inp[NEXT_POS:] + (rows != self.budget.dummy_row)
            pos, slots, ctx = inp[NEXT_POS], inp[NEXT_CACHE_SLOT], inp[NEXT_CONTEXT]
            pages = _cdiv(max_context, self.page_size)
            meta = StepMeta(is_prefill=False, slot_mapping=slots,
                            block_tables=self.block_tables[:, :pages].index_select(0, rows),
                            context_lens=ctx.to(torch.int32), max_context=max_context)
            logits = self._forward(self.budget.tables.state[rows, fs.LAST_TOKEN], pos, meta, None)
        with rec.phase("sample_and_force"):
            return self._sample(logits, rows, filtered, logprobs_k)

    def _forward(self, ids, pos, meta: StepMeta, logits_idx):
        self.cache.meta = meta
        try:
            return self.model(ids, pos, kv_cache=self.cache, logits_indices=logits_idx, ops=self.ops)
        finally:
            self.cache.meta = None

    # ------------------------------------------------------------------ CUDA graphs
    def buckets(self) -> list[int]:
        cand = [1, 2, 4, 8, 16] + list(range(32, self.max_num_seqs + 1, 32)) + [self.max_num_seqs]
        return sorted(set(b for b in cand if b <= self.max_num_seqs))

    def _init_static(self) -> None:
        self._static = torch.full((self.max_num_seqs,), self.budget.dummy_row, dtype=torch.int64,
                                  device=self.device)                     # the batch's slots

    def _graph_step(self, bs: int, filtered: bool) -> torch.Tensor:
        """What a graph captures; reads only the static buffers and the engine's tables."""
        return self._decode_step(self._static[:bs], filtered, self.max_model_len)

    def _capture(self, bs: int, filtered: bool):
        """Warm up and capture with harmless inputs (no K/V writes: slot -1; every row the
        budget's dummy row), then restore the static buffers."""
        saved = self._static.clone()
        self._static[:bs].fill_(self.budget.dummy_row)
        self._graph_step(bs, filtered)      # warm-up: Triton compiles, the allocator settles
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, self._pool):
            out = self._graph_step(bs, filtered)
        self._pool = g.pool()
        torch.cuda.synchronize()
        self._static.copy_(saved)
        return (g, out, bs, filtered)

    def _launch(self, entry) -> None:
        entry[0].replay()

    def _replay(self, seqs: list[Sequence], filtered: bool, rec=profiling.OFF) -> torch.Tensor:
        """A decode step as one CUDA graph: forward and sample_and_force are one launch, so the
        profile shows them as one "decode_forward" range (the device time covers both)."""
        if self._static is None:
            self._init_static()
        bs = len(seqs)
        bucket = next(b for b in self.buckets() if b >= bs)
        key = (bucket, filtered)
        if key not in self.graphs:
            self.graphs[key] = self._capture(bucket, filtered)
        with rec.phase("prepare_inputs"):
            self._static[:bucket].copy_(self.decode_inputs(seqs, bucket))
        with rec.phase("decode_forward"):
            self._launch(self.graphs[key])
        return self.graphs[key][1][:, :bs]
