"""Tensor parallelism for inference, applied from outside the single-device model (Megatron-LM's
layout, as vLLM's Qwen2 / Qwen3): `shard_model` swaps modules of a `Qwen2ForCausalLM` (either
family) for local-shape ones;
s1/model/qwen2.py is unchanged and knows nothing of ranks.

Layout on rank r of n (every split is contiguous and balanced, `split(items, n, r)`; uneven splits
are allowed, so e.g. Qwen2.5-7B's 28 query heads run on 8 ranks as 4,3,4,3,...):
  heads       n <= Hk: rank r holds a range of KV groups (a KV head and its g = Hq/Hk query heads).
              n > Hk (n % Hk == 0): each KV head is replicated on n/Hk ranks, which split its g query
              heads (7B, 28/4 heads, TP 8: every rank 1 KV head and 4 or 3 query heads).
              `Attention.num_heads / num_kv_heads` are set to the local counts, so its reshapes and
              GQA ratio are the local ones; RoPE is per head and unaffected.
  attention   q/k/v column-parallel (rows of weight and bias = this rank's heads), no communication;
              o_proj row-parallel (its columns = the same heads) + ONE all-reduce of [T, hidden].
  MLP         gate/up column-parallel (rows: an intermediate range), down row-parallel + ONE all-reduce.
  embedding   vocabulary-parallel rows [v0, v1): ids outside the range look up row 0 and are zeroed,
              then one all-reduce (exact: a sum of one row and zeros).
  LM head     vocabulary-parallel rows [v0, v1) (tied: the embedding shard itself): the model returns
              LOCAL logits [T, v1 - v0]; full logits are gathered only for top-k / top-p batches
              (`gather_logits`, the sort pre-pass of s1/infer/budget.py); the sampler reduces
              per-rank (score, id) winners instead (`sample_partials` / `force_from_partials` in
              s1/kernels/). `greedy_argmax` does the same for plain argmax decoding with the model
              alone (no engine).
  norms       replicated (Qwen3's per-head q_norm / k_norm weights [head_dim] too: every head uses them).
So a forward runs 2 * layers + 1 all-reduces, each a plain `dist.all_reduce` on a device tensor
(no host sync, no shape-dependent Python branching): NCCL captures them in CUDA graphs.
The labels (loss) path of `Qwen2ForCausalLM.forward` is not tensor-parallel: inference only.

Each rank loads only its ranges of the HF checkpoint (`load_model` here -> s1/model/loading.py with
the `TPPlan` ranges): the model is built on meta, resized to local shapes, allocated once, and
filled range by range from the safetensors files.

The engine (s1/infer/engine.py, `EngineConfig.tensor_parallel_size`) builds on this: `load_model`,
`cache_config`, the sampler's gather of per-rank (score, id) winners (`TPGroup.all_gather`,
s1/kernels/*: `sample_partials` / `force_from_partials`), `all_gather_ints` for start-up agreement,
`guard` around every step.

Failure: the process group has a timeout (`init_tensor_parallel(timeout_s=...)`). Under gloo a peer
that exits breaks the connection and the next collective raises at once; one that hangs makes it
raise after the timeout. Under NCCL the watchdog aborts after the timeout. `TPGroup.guard(what)`
turns those errors into a `TPError` naming this rank and what it was doing, and the failing rank
when it is known. Any other exception inside `guard` on one rank (a bug, out of memory,
KeyboardInterrupt) shuts the process group down on that rank (`abort`: it records "rank r: why" in
the group's store, then destroys the group), so every peer's pending or next collective fails at
once instead of waiting for the timeout, and its TPError names that rank; the rank itself raises
TPError (KeyboardInterrupt / SystemExit stay themselves) and its engine refuses further steps.
`check_peers()` is a
monitored barrier (gloo) for start-up (after loading, before decoding) that names the ranks that
did not arrive ("Ranks 1 failed to pass monitoredBarrier in 2000 ms"); once a collective has timed
out, gloo has closed the connections and later calls fail at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from s1.model import loading
from s1.model.config import Qwen2Config
from s1.model.qwen2 import Qwen2ForCausalLM


class TPError(RuntimeError):
    """A tensor-parallel collective failed: a peer rank exited, hung past the timeout, or diverged."""


@dataclass
class TPGroup:
    """This process's place in a tensor-parallel group. world_size 1 (the default) is a no-op.

    group: the torch.distributed process group of the TP ranks (None with world_size > 1: the
    default group). cpu_group: a gloo group over the same ranks for host-side checks
    (`check_peers`); equal to `group` under gloo. dp_rank / dp_size: which of the data-parallel
    replicas (world = dp_size x world_size, consecutive ranks form a TP group) this group is.
    A TPGroup with group=None and world_size > 1 is enough for loading a shard (no collectives).
    """
    rank: int = 0
    world_size: int = 1
    group: Any = None
    cpu_group: Any = None
    timeout_s: float = 300.0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    dp_rank: int = 0
    dp_size: int = 1
    broken: str | None = None       # set by abort(): this group can run no more collectives

    def __post_init__(self):
        if not (0 <= self.rank < self.world_size):
            raise ValueError(f"TP rank {self.rank} outside a group of {self.world_size}")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """In-place SUM over the TP ranks (CUDA-graph capturable under NCCL); returns t."""
        if self.world_size > 1:
            dist.all_reduce(t, group=self.group)
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """[world, *t.shape]: every rank's t, in rank order."""
        if self.world_size == 1:
            return t.unsqueeze(0)
        t = t.contiguous()
        out = t.new_empty((self.world_size * t.shape[0], *t.shape[1:]))  # gloo wants ranks concatenated
        _all_gather_single(out, t, group=self.group)
        return out.view(self.world_size, *t.shape)

    def all_gather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's host integers (int64), in rank order. A host sync: for start-up agreement
        (the KV pages all ranks can hold, rank 0's random seed), not for the decode loop."""
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        return self.all_gather(t).tolist()

    @contextlib.contextmanager
    def guard(self, what: str = "a step"):
        """Re-raise a failed collective inside the block as a TPError that says what happened; any
        other exception shuts the group down (`abort`) so the peers stop within seconds."""
        if self.broken is not None:
            raise TPError(f"tensor-parallel rank {self.rank} of {self.world_size}: the group was shut down "
                          f"({self.broken}); cannot run {what}")
        try:
            yield
        except BaseException as e:
            if isinstance(e, TPError) or not self.enabled:
                raise
            first = str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__
            if isinstance(e, RuntimeError) and _is_comm_error(e):
                culprit = self._failed_peer()
                self.broken = culprit or "a collective failed"
                raise TPError(
                    f"tensor-parallel rank {self.rank} of {self.world_size}: a collective failed during {what}: "
                    + (f"{culprit} and shut the group down. " if culprit else
                       f"another rank exited or stopped answering (process-group timeout {self.timeout_s:g} s); "
                       "see the other ranks' logs for the first error. ")
                    + f"Cause: {first}") from e
            why = f"rank {self.rank} raised {type(e).__name__} during {what}: {first}"
            self.abort(why)
            if not isinstance(e, Exception):     # KeyboardInterrupt, SystemExit: stay themselves
                raise
            raise TPError(f"tensor-parallel rank {self.rank} of {self.world_size}: {type(e).__name__} during "
                          f"{what}: {first}; the process group was shut down so every rank stops") from e

    _FAILED_KEY = "s1/tp_failed"

    def abort(self, why: str) -> None:
        """Shut the process group down on this rank (idempotent): record `why` for the peers, then
        abort / destroy the groups, which fails their pending and next collectives at once."""
        if self.broken is not None:
            return
        self.broken = why
        if not dist.is_initialized():
            return
        with contextlib.suppress(Exception):
            dist.distributed_c10d._get_default_store().set(self._FAILED_KEY, why)
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if abort is not None and dist.get_backend() == "nccl":
            with contextlib.suppress(Exception):
                abort()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

    def _failed_peer(self) -> str | None:
        """What a peer that shut the group down recorded (`abort`), if it did."""
        with contextlib.suppress(Exception):
            store = dist.distributed_c10d._get_default_store()
            if store.check([self._FAILED_KEY]):
                return store.get(self._FAILED_KEY).decode()
        return None

    def check_peers(self, timeout_s: float | None = None) -> None:
        """Monitored barrier over the TP ranks (gloo): raises TPError naming the ranks that did not
        arrive within timeout_s (default: the group's timeout), or that exited."""
        if self.world_size == 1:
            return
        t = datetime.timedelta(seconds=timeout_s if timeout_s is not None else self.timeout_s)
        try:
            dist.monitored_barrier(group=self.cpu_group if self.cpu_group is not None else self.group,
                                   timeout=t, wait_all_ranks=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:400]
            raise TPError(f"tensor-parallel rank {self.rank} of {self.world_size}: peer check failed "
                          f"within {t.total_seconds():g} s: {first}") from e


# torch >= 2.13 names it all_gather_single (all_gather_into_tensor: deprecated alias).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

# What a lost peer looks like: gloo "Connection reset/closed by peer", "Timed out waiting ...";
# NCCL "NCCL error ... remote process exited", the watchdog's timeout; store / network errors.
_PEER_LOST_MARKS = ("connection reset", "connection closed", "connection refused", "by peer", "timed out",
                    "timeout", "broken pipe", "nccl error", "ncclremoteerror", "ncclsystemerror", "watchdog",
                    "monitoredbarrier")


def _is_comm_error(e: BaseException) -> bool:
    kinds = tuple(k for k in (getattr(dist, "DistNetworkError", None), getattr(dist, "DistStoreError", None))
                  if k is not None)
    if kinds and isinstance(e, kinds):
        return True
    msg = str(e).lower()
    return any(m in msg for m in _PEER_LOST_MARKS)


def init_tensor_parallel(tp_size: int | None = None, *, backend: str | None = None,
                         timeout_s: float = 300.0) -> TPGroup:
    """Join (or start) torch.distributed from torchrun's environment and return this rank's TPGroup.

    World size 1 (no WORLD_SIZE, no process group): a no-op TPGroup. tp_size defaults to the world
    size; a smaller tp_size must divide it and makes world / tp_size data-parallel replicas, each a
    TP group of consecutive ranks. Backend: NCCL when CUDA is available (device cuda:LOCAL_RANK,
    a gloo side group for `check_peers`), else gloo. Every rank must call this (group creation is
    collective); calling it again on an initialized world creates new groups.
    """
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    tp_size = tp_size or world
    if world % tp_size:
        raise ValueError(f"tensor-parallel size {tp_size} does not divide the world size {world}")
    cuda = torch.cuda.is_available() if backend is None else backend == "nccl"
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world == 1 and not dist.is_initialized():
        return TPGroup(timeout_s=timeout_s, device=device)
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        kw = dict(device_id=device) if backend == "nccl" else {}  # eager NCCL init (before any capture)
        dist.init_process_group(backend, timeout=timeout, **kw)
    rank = dist.get_rank()
    gloo = dist.get_backend() == "gloo"
    mine = cpu_mine = None
    for first in range(0, world, tp_size):  # every rank creates every group, in the same order
        ranks = list(range(first, first + tp_size))
        g = dist.new_group(ranks, timeout=timeout) if tp_size < world else dist.group.WORLD
        cg = g if gloo else dist.new_group(ranks, timeout=timeout, backend="gloo")
        if rank in ranks:
            mine, cpu_mine = g, cg
    return TPGroup(rank=rank % tp_size, world_size=tp_size, group=mine, cpu_group=cpu_mine,
                   timeout_s=timeout_s, device=device, dp_rank=rank // tp_size, dp_size=world // tp_size)


# ---------------------------------------------------------------------------------------- the plan

def split(items: int, parts: int, index: int) -> tuple[int, int]:
    """[start, stop) of part `index` when `items` are split into `parts` contiguous, balanced ranges
    (the first items % parts ranges one longer)."""
    base, rem = divmod(items, parts)
    start = index * base + min(index, rem)
    return start, start + base + (1 if index < rem else 0)


@dataclass(frozen=True)
class HeadShard:
    q: tuple[int, int]   # query heads [start, stop)
    kv: tuple[int, int]  # KV heads [start, stop)

    @property
    def num_q(self) -> int:
        return self.q[1] - self.q[0]

    @property
    def num_kv(self) -> int:
        return self.kv[1] - self.kv[0]


def head_shard(cfg: Qwen2Config, world: int, rank: int) -> HeadShard:
    """The query and KV heads rank `rank` of `world` computes (see the module docstring)."""
    Hq, Hk = cfg.num_attention_heads, cfg.num_key_value_heads
    g = Hq // Hk
    if world <= Hk:
        k0, k1 = split(Hk, world, rank)
        return HeadShard((k0 * g, k1 * g), (k0, k1))
    if world % Hk:
        raise ValueError(f"tensor-parallel size {world} exceeds num_key_value_heads={Hk} and is not a multiple "
                         f"of it: each KV head must be replicated on the same number of ranks")
    if world > Hq:
        raise ValueError(f"tensor-parallel size {world} exceeds num_attention_heads={Hq}: a rank would hold "
                         f"no query head")
    rep = world // Hk
    j, s = divmod(rank, rep)
    q0, q1 = split(g, rep, s)
    return HeadShard((j * g + q0, j * g + q1), (j, j + 1))


def vocab_range(tp: TPGroup, vocab_size: int) -> tuple[int, int]:
    """[v0, v1): the vocabulary rows (embedding, LM head) and logit columns this rank holds."""
    return split(vocab_size, tp.world_size, tp.rank)


def vocab_offset(tp: TPGroup, vocab_size: int) -> int:
    """Global token id of local logit column 0 on this rank."""
    return vocab_range(tp, vocab_size)[0]


def cache_config(cfg: Qwen2Config, tp: TPGroup) -> Qwen2Config:
    """The config a KV cache on this rank is sized from: local query and KV head counts (the caches
    read num_hidden_layers, num_key_value_heads and head_dim). E.g. PagedKVCache(cache_config(cfg, tp),
    ...), kv_bytes_per_token(cache_config(cfg, tp), dt)."""
    h = head_shard(cfg, tp.world_size, tp.rank)
    return dataclasses.replace(cfg, num_attention_heads=h.num_q, num_key_value_heads=h.num_kv)


class TPPlan:
    """Which range of every HF checkpoint tensor this rank holds (`part`); `shard_model` gives the
    modules the same local shapes, and the loader reads exactly these ranges."""

    def __init__(self, cfg: Qwen2Config, tp: TPGroup):
        self.cfg, self.tp = cfg, tp
        self.heads = head_shard(cfg, tp.world_size, tp.rank)
        self.ffn = split(cfg.intermediate_size, tp.world_size, tp.rank)
        self.vocab = vocab_range(tp, cfg.vocab_size)

    def part(self, hf_name: str) -> tuple[int, int, int] | None:
        """(dim, start, stop) of tensor `hf_name` on this rank; None = replicated (all of it)."""
        if self.tp.world_size == 1 or hf_name.endswith("norm.weight"):
            return None
        D = self.cfg.head_dim
        (q0, q1), (k0, k1) = self.heads.q, self.heads.kv
        leaf = hf_name.rsplit(".", 2)[-2:]  # e.g. ["q_proj", "bias"]
        if hf_name in ("model.embed_tokens.weight", "lm_head.weight"):
            return (0, *self.vocab)
        if leaf[0] == "q_proj":
            return (0, q0 * D, q1 * D)
        if leaf[0] in ("k_proj", "v_proj"):
            return (0, k0 * D, k1 * D)
        if leaf[0] == "o_proj":
            return (1, q0 * D, q1 * D)
        if leaf[0] in ("gate_proj", "up_proj"):
            return (0, *self.ffn)
        if leaf[0] == "down_proj":
            return (1, *self.ffn)
        raise KeyError(f"no tensor-parallel placement for tensor {hf_name!r}")


class RowParallelLinear(nn.Linear):
    """Row-parallel linear (o_proj, down_proj): this rank's input columns; the partial products of
    all ranks are summed by one all-reduce of the [T, out] output. No bias (none in Qwen2 here)."""

    def __init__(self, in_features: int, out_features: int, tp: TPGroup, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tp.all_reduce(F.linear(x, self.weight))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tp={self.tp.rank}/{self.tp.world_size}"


class VocabParallelEmbedding(nn.Embedding):
    """Rows [vocab_start, vocab_end) of the embedding; ids outside are looked up as row 0, zeroed,
    and the [T, hidden] result all-reduced (exactly one rank contributes each token's row)."""

    def __init__(self, vocab_start: int, vocab_end: int, dim: int, tp: TPGroup, device=None, dtype=None):
        super().__init__(vocab_end - vocab_start, dim, device=device, dtype=dtype)
        self.vocab_start, self.vocab_end, self.tp = vocab_start, vocab_end, tp

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings)
        h = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.tp.all_reduce(h.masked_fill(outside.unsqueeze(-1), 0))

    def extra_repr(self) -> str:
        return f"vocab [{self.vocab_start}, {self.vocab_end}), {self.embedding_dim}, tp={self.tp.rank}/{self.tp.world_size}"


def _resized(src: nn.Module, new: nn.Module, names: dict[str, tuple[int, int, int] | None]) -> nn.Module:
    """Fill `new`'s parameters from `src`'s ranges (skipped on meta: loading fills them)."""
    with torch.no_grad():
        for attr, part in names.items():
            s = getattr(src, attr)
            if s.is_meta:
                continue
            if part is not None:
                s = s.narrow(part[0], part[1], part[2] - part[1])
            getattr(new, attr).copy_(s)
    return new


def shard_model(model: Qwen2ForCausalLM, tp: TPGroup) -> Qwen2ForCausalLM:
    """Make `model` this rank's tensor-parallel shard, in place (see the module docstring).

    Works on a meta-device model (shapes only; `load_model` then fills the ranges from disk) or on
    a materialized one (each module's range is copied, the rest freed). world_size 1: unchanged.
    Sets `model.tp` and `model.vocab_range`; the forward then returns local logits [T, v1 - v0].
    """
    if tp.world_size == 1:
        return model
    if getattr(model, "tp", None) is not None:
        raise ValueError("model is already tensor-parallel")
    cfg = model.config
    plan = TPPlan(cfg, tp)
    D, H = cfg.head_dim, cfg.hidden_size
    (q0, q1), (k0, k1) = plan.heads.q, plan.heads.kv
    f0, f1 = plan.ffn
    v0, v1 = plan.vocab

    def like(p):
        return dict(device=p.device, dtype=p.dtype)

    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        w = like(a.q_proj.weight)
        bias = cfg.attention_bias  # Qwen2: q/k/v biases (rows = heads, split with them); Qwen3: none
        q_rows, kv_rows = (0, q0 * D, q1 * D), (0, k0 * D, k1 * D)
        a.q_proj = _resized(a.q_proj, nn.Linear(H, (q1 - q0) * D, bias=bias, **w),
                            {"weight": q_rows, **({"bias": q_rows} if bias else {})})
        for proj in ("k_proj", "v_proj"):
            setattr(a, proj, _resized(getattr(a, proj), nn.Linear(H, (k1 - k0) * D, bias=bias, **w),
                                      {"weight": kv_rows, **({"bias": kv_rows} if bias else {})}))
        # Qwen3's q_norm / k_norm weights are per head_dim, shared by every head: replicated as is.
        a.o_proj = _resized(a.o_proj, RowParallelLinear((q1 - q0) * D, H, tp, **w),
                            {"weight": (1, q0 * D, q1 * D)})
        a.num_heads, a.num_kv_heads = q1 - q0, k1 - k0
        w = like(m.gate_proj.weight)
        m.gate_proj = _resized(m.gate_proj, nn.Linear(H, f1 - f0, bias=False, **w), {"weight": (0, f0, f1)})
        m.up_proj = _resized(m.up_proj, nn.Linear(H, f1 - f0, bias=False, **w), {"weight": (0, f0, f1)})
        m.down_proj = _resized(m.down_proj, RowParallelLinear(f1 - f0, H, tp, **w), {"weight": (1, f0, f1)})
    emb = model.model.embed_tokens
    model.model.embed_tokens = _resized(emb, VocabParallelEmbedding(v0, v1, H, tp, **like(emb.weight)),
                                        {"weight": (0, v0, v1)})
    if not cfg.tie_word_embeddings:  # tied: lm_head_weight is the embedding shard itself
        model.lm_head = _resized(model.lm_head, nn.Linear(H, v1 - v0, bias=False, **like(model.lm_head.weight)),
                                 {"weight": (0, v0, v1)})
    model.tp = tp
    model.vocab_range = (v0, v1)
    return model


class _ShardLoading:
    """The `shard` argument of s1.model.loading.load_model: the plan is made from the model's config
    (so the path may be anything the loader resolves), the surgery done on the meta model."""

    def __init__(self, tp: TPGroup):
        self.tp, self.plan = tp, None

    def prepare(self, model: Qwen2ForCausalLM) -> None:
        self.plan = TPPlan(model.config, self.tp)
        shard_model(model, self.tp)

    def part(self, hf_name: str) -> tuple[int, int, int] | None:
        return self.plan.part(hf_name)


def load_model(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None,
               tp: TPGroup | None = None, stats: dict | None = None) -> Qwen2ForCausalLM:
    """This rank's shard of an HF checkpoint: reads only its ranges of each tensor (see
    s1/model/loading.py); tp None or world 1: the whole model. stats: see `loading.load_model`."""
    shard = _ShardLoading(tp) if tp is not None and tp.world_size > 1 else None
    return loading.load_model(path, device=device, dtype=dtype, shard=shard, stats=stats)


# ---------------------------------------------------------------------------- logits across ranks

def greedy_argmax(local_logits: torch.Tensor, tp: TPGroup, vocab_size: int) -> torch.Tensor:
    """Global argmax [N] (int64 token ids) of logits split by vocabulary across ranks, from the
    local [N, v1 - v0], without gathering them (greedy decoding with the sharded model alone; the
    engine's sampler does its own reduction): every rank's (max, first argmax) pair goes through
    ONE all-gather ([world, 2, N] fp32; ids < 2**24 are exact in fp32) and the first rank holding
    the maximum wins, so ties resolve to the lowest id exactly as torch.argmax over the full row.
    No host sync. (The engine's Gumbel race reduces the same way, with noise keyed by global id.)"""
    val, idx = local_logits.float().max(dim=-1)
    idx = idx + vocab_offset(tp, vocab_size)
    if tp.world_size == 1:
        return idx
    assert vocab_size < 2 ** 24, "token ids travel as fp32"
    parts = tp.all_gather(torch.stack([val, idx.float()]))  # [world, 2, N]
    best = parts[:, 0].argmax(dim=0, keepdim=True)          # first (lowest) rank holding the max
    return parts[:, 1].gather(0, best).squeeze(0).long()


def gather_logits(local_logits: torch.Tensor, tp: TPGroup, vocab_size: int) -> torch.Tensor:
    """Full logits [N, vocab_size] on every rank from the local [N, v1 - v0]: the engine's top-k /
    top-p batches need them for their sort pre-pass (s1/infer/budget.py); every other batch samples
    from the shards without gathering them."""
    if tp.world_size == 1:
        return local_logits
    width = -(-vocab_size // tp.world_size)  # the widest rank's range; narrower ones are padded
    parts = tp.all_gather(F.pad(local_logits, (0, width - local_logits.shape[-1])))  # [world, N, width]
    sizes = [b - a for a, b in (split(vocab_size, tp.world_size, r) for r in range(tp.world_size))]
    return torch.cat([parts[r, ..., :n] for r, n in enumerate(sizes)], dim=-1)
