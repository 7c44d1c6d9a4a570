"""Model runner: turns a scheduled batch into one forward + one sampling/budget step.

Prefill batch: the not-yet-cached tokens of each sequence, packed ([T]); keys span
[cached prefix + new] (bottom-right causal varlen attention). Only each sequence's last row goes
through the LM head (`logits_indices`). Decode batch: one token per sequence, taken on device
from `BudgetState.last_token` (so the host never needs the sampled values to continue).

On CUDA, decode steps replay CUDA graphs (forward + sampling + budget rules) captured lazily for
batch-size buckets (1, 2, 4, 8, 16, 32, 64, ... up to max_num_seqs); pad rows write no K/V
(slot -1) and step the budget's dummy row. Disable with LLM(..., enforce_eager=True).
"""
from __future__ import annotations

import torch

from infer.budget import BudgetState
from infer.paged_cache import PagedKVCache, StepMeta
from infer.request import Sequence


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class ModelRunner:
    def __init__(self, model, cache: PagedKVCache, max_num_seqs: int, max_model_len: int,
                 device, use_cuda_graphs: bool = False):
        self.model = model
        self.cache = cache
        self.device = torch.device(device)
        self.page_size = cache.page_size
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.max_pages_per_seq = _cdiv(max_model_len, cache.page_size)
        self.graphs: dict[int, tuple] = {}
        self.use_cuda_graphs = use_cuda_graphs and self.device.type == "cuda"
        # passed to every forward: with a KV cache the model ignores it, and passing it keeps the
        # model from building one on the host (not allowed inside CUDA-graph capture)
        self._cu = torch.tensor([0, 1], dtype=torch.int32, device=self.device)

    def _tensor(self, vals, dtype) -> torch.Tensor:
        t = torch.tensor(vals, dtype=dtype)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _slot(self, seq: Sequence, pos: int) -> int:
        return seq.block_table[pos // self.page_size] * self.page_size + pos % self.page_size

    # ------------------------------------------------------------------ prefill
    def prepare_prefill(self, seqs: list[Sequence]):
        ids, pos, slots, cu_q, cu_k, gather = [], [], [], [0], [0], []
        any_cached = any(s.num_cached_tokens for s in seqs)
        for s in seqs:
            n, c = s.num_tokens, s.num_cached_tokens
            toks = s.token_ids
            ids.extend(toks[c:n])
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
        return self._tensor(ids, torch.int64), self._tensor(pos, torch.int64), meta, logits_idx

    # ------------------------------------------------------------------ decode
    def prepare_decode(self, seqs: list[Sequence], width: int | None = None):
        pos = [s.num_tokens - 1 for s in seqs]
        slots = [self._slot(s, p) for s, p in zip(seqs, pos)]
        width = width or max(len(s.block_table) for s in seqs)
        bt = [s.block_table + [0] * (width - len(s.block_table)) for s in seqs]
        meta = StepMeta(is_prefill=False, slot_mapping=self._tensor(slots, torch.int64),
                        block_tables=self._tensor(bt, torch.int32),
                        context_lens=self._tensor([s.num_tokens for s in seqs], torch.int32),
                        max_context=max(s.num_tokens for s in seqs))
        return self._tensor(pos, torch.int64), meta

    # ------------------------------------------------------------------ one step
    @torch.inference_mode()
    def run(self, seqs: list[Sequence], is_prefill: bool, budget: BudgetState) -> torch.Tensor:
        """Forward + sample + budget rules. Returns BudgetState.step's info [6, B] (on device)."""
        rows = self._tensor([s.req_id for s in seqs], torch.int64)
        if is_prefill:
            ids, pos, meta, logits_idx = self.prepare_prefill(seqs)
            self.cache.meta = meta
            logits = self.model(ids, pos, cu_seqlens=self._cu, max_seqlen=1, kv_cache=self.cache,
                                logits_indices=logits_idx)
        elif self.use_cuda_graphs and len(seqs) <= self.max_num_seqs:
            return self._replay(seqs, rows, budget)
        else:
            pos, meta = self.prepare_decode(seqs)
            self.cache.meta = meta
            logits = self.model(budget.last_token[rows], pos, cu_seqlens=self._cu, max_seqlen=1,
                                kv_cache=self.cache)
        self.cache.meta = None
        return budget.step(logits, rows)

    # ------------------------------------------------------------------ CUDA graphs
    # A decode graph holds the whole step: gather the input tokens from budget.last_token, the
    # forward, sampling and the budget rules, so a step costs the host a few small copies and one
    # replay. Graphs are captured lazily per (batch bucket, any_random, any_filter, any_mask) -- the
    # last three choose the sampler's code path -- and stay valid while the LLM keeps the same
    # BudgetState (its tensors keep their addresses across generate calls).
    def buckets(self) -> list[int]:
        cand = [1, 2, 4, 8, 16] + list(range(32, self.max_num_seqs + 1, 32)) + [self.max_num_seqs]
        return sorted(set(b for b in cand if b <= self.max_num_seqs))

    def _init_static(self) -> None:
        n, dev = self.max_num_seqs, self.device
        self._static = dict(pos=torch.zeros(n, dtype=torch.int64, device=dev),
                            slots=torch.full((n,), -1, dtype=torch.int64, device=dev),
                            bt=torch.zeros(n, self.max_pages_per_seq, dtype=torch.int32, device=dev),
                            ctx=torch.ones(n, dtype=torch.int32, device=dev),
                            rows=torch.zeros(n, dtype=torch.int64, device=dev))
        self._graph_meta: dict[int, StepMeta] = {}
        self._graph_budget = None
        self._pool = None

    def _graph_step(self, bs: int, budget: BudgetState) -> torch.Tensor:
        """What a graph captures; reads only static buffers and budget tensors."""
        st = self._static
        if bs not in self._graph_meta:
            self._graph_meta[bs] = StepMeta(
                is_prefill=False, slot_mapping=st["slots"][:bs], block_tables=st["bt"][:bs],
                context_lens=st["ctx"][:bs], max_context=self.max_model_len)
        self.cache.meta = self._graph_meta[bs]
        rows = st["rows"][:bs]
        logits = self.model(budget.last_token[rows], st["pos"][:bs], cu_seqlens=self._cu, max_seqlen=1,
                            kv_cache=self.cache)
        self.cache.meta = None
        return budget.step(logits, rows)

    def _capture(self, bs: int, budget: BudgetState):
        """Warm up and capture with harmless inputs (no K/V writes: slot -1; every row the
        budget's dummy row), then restore the static buffers."""
        st = self._static
        saved = {k: v.clone() for k, v in st.items()}
        st["slots"].fill_(-1)
        st["ctx"].fill_(1)
        st["rows"].fill_(budget.dummy_row)
        fn = lambda: self._graph_step(bs, budget)  # noqa: E731
        fn()  # warm-up: Triton compiles, the allocator settles
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, self._pool):
            out = fn()
        self._pool = g.pool()
        torch.cuda.synchronize()
        for k, v in saved.items():
            st[k].copy_(v)
        return (g, out, fn)

    def _launch(self, entry) -> None:
        entry[0].replay()

    def _replay(self, seqs: list[Sequence], rows: torch.Tensor, budget: BudgetState) -> torch.Tensor:
        if not hasattr(self, "_static"):
            self._init_static()
        if budget is not self._graph_budget:  # graphs point at the old budget's tensors
            self.graphs.clear()
            self._graph_budget = budget
        bs = len(seqs)
        bucket = next(b for b in self.buckets() if b >= bs)
        key = (bucket, budget.any_random, budget.any_filter, budget.any_mask)
        if key not in self.graphs:
            self.graphs[key] = self._capture(bucket, budget)
        st = self._static
        pos, meta = self.prepare_decode(seqs)
        st["pos"][:bs].copy_(pos)
        st["slots"][:bs].copy_(meta.slot_mapping)
        # only the used columns: the kernel never reads past cdiv(context_len, page) pages
        st["bt"][:bs, :meta.block_tables.shape[1]].copy_(meta.block_tables)
        st["ctx"][:bs].copy_(meta.context_lens)
        st["rows"][:bs].copy_(rows)
        st["slots"][bs:bucket].fill_(-1)
        st["ctx"][bs:bucket].fill_(1)
        st["rows"][bs:bucket].fill_(budget.dummy_row)
        self._launch(self.graphs[key])
        return self.graphs[key][1][:, :bs]
