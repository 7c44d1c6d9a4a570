"""Tensor parallelism for inference (s1/infer/tensor_parallel.py) on CPU with gloo.

In one process:
- the head / vocabulary / MLP plan for every Qwen2.5 and Qwen3 shape and TP 1-8 (uneven splits, replicated
  KV heads), and the exact per-rank parameter bytes of the 7B and 32B shapes (meta device);
- sharded loading: every rank's parameters equal its ranges of the full model, and it reads
  exactly those bytes (also from a multi-file checkpoint, bf16 on disk -> fp32).
In one launch of 4 processes (torchrun's environment variables, gloo; tests/infer/tp_worker.py):
- each rank's peak RSS while loading its TP-4 shard of a 70 MiB checkpoint grows by its quarter;
- TP 4 and TP 2 x DP 2 logits of a packed prefill and of decode steps through a KV cache equal
  TP 1 (fp32), greedy tokens identical, one all-reduce per attention and per MLP block (+1 for the
  embedding), for GQA with KV heads < TP (replicated) and dividing TP, tied and untied, and Qwen3
  (no biases, replicated per-head q/k norms);
- a rank that exits, or hangs, makes its TP peer raise TPError (at once / after the timeout).
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from s1 import kernels
from s1.infer import tensor_parallel as TP
from s1.model.config import SHAPES, Qwen2Config, shape_config
from s1.model.loading import CheckpointError, save_model, save_random_checkpoint, save_state_dict
from s1.model.qwen2 import Qwen2ForCausalLM
from tests._lib_helpers import param_bytes, plan_numel, uniform_noise_i64

HERE = os.path.dirname(os.path.abspath(__file__))   # the rank workers tp_worker.py, tp_engine_worker.py
ROOT = os.path.dirname(os.path.dirname(HERE))

# name -> (config overrides); all fp32, 2 layers, tiny. Heads q/kv and what TP 2 / TP 4 do with them.
CASES = {
    # 6/2 heads: TP 2 divides the KV heads; TP 4 replicates each on 2 ranks, q heads split 2,1,2,1.
    # Vocabulary 250: uneven ranges at TP 4 (63, 63, 62, 62).
    "gqa62_tied": dict(num_attention_heads=6, num_key_value_heads=2, vocab_size=250, tie_word_embeddings=True),
    # 8/4 heads: TP 2 and TP 4 divide. Untied LM head.
    "gqa84_untied": dict(num_attention_heads=8, num_key_value_heads=4, vocab_size=256, tie_word_embeddings=False),
    # 4/1 heads (MQA): the one KV head replicated on every rank. Untied, vocabulary 203.
    "mqa41_untied": dict(num_attention_heads=4, num_key_value_heads=1, vocab_size=203, tie_word_embeddings=False),
    # Qwen3: no q/k/v biases, per-head q/k norms (replicated), 8 x 16 = 128 != hidden 64; 8/2 heads: TP 4
    # replicates each KV head on 2 ranks. Tied, vocabulary 250.
    "qwen3_gqa82_tied": dict(model_type="qwen3", num_attention_heads=8, num_key_value_heads=2, vocab_size=250,
                             tie_word_embeddings=True),
}


def tiny_config(**kw) -> Qwen2Config:
    d = dict(hidden_size=64, head_dim=16, intermediate_size=120, num_hidden_layers=2, rms_norm_eps=1e-6,
             rope_theta=10000.0, torch_dtype="float32")
    d.update(kw)
    return Qwen2Config(**d)


def random_model(cfg: Qwen2Config, seed: int) -> Qwen2ForCausalLM:
    m = Qwen2ForCausalLM(cfg)
    m.init_weights(seed=seed)
    with torch.no_grad():  # non-trivial biases and norms, so a misplaced range would show
        for n, p in m.named_parameters():
            if n.endswith(".bias") or n.endswith("norm.weight"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + len(n))) * 0.1)
    return m.eval()


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_ckpts")
    out = {}
    for i, (name, kw) in enumerate(CASES.items()):
        d = root / name
        save_model(random_model(tiny_config(**kw), seed=100 + i), d)
        out[name] = str(d)
    return out


@pytest.fixture(scope="module")
def medium_checkpoint(tmp_path_factory):
    """~71 MB of fp32 weights (mostly the two 32,000 x 256 vocabulary tables), for peak memory."""
    d = tmp_path_factory.mktemp("tp_medium")
    cfg = tiny_config(hidden_size=256, head_dim=32, num_attention_heads=8, num_key_value_heads=4,
                      intermediate_size=1024, vocab_size=32000, tie_word_embeddings=False)
    return save_random_checkpoint(d, cfg, seed=3)


# ------------------------------------------------------------------------------ plan, one process

@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "smoke"])
def test_head_plan_covers_every_head_once(shape):
    cfg = shape_config(shape)
    Hq, Hk = cfg.num_attention_heads, cfg.num_key_value_heads
    g = Hq // Hk
    for n in (1, 2, 3, 4, 6, 8):
        if n > Hk and (n % Hk or n > Hq):
            with pytest.raises(ValueError, match="tensor-parallel size"):
                TP.head_shard(cfg, n, 0)
            continue
        shards = [TP.head_shard(cfg, n, r) for r in range(n)]
        assert [h for s in shards for h in range(*s.q)] == list(range(Hq))  # each query head once, in order
        for s in shards:
            assert s.num_q >= 1 and s.num_kv >= 1 and s.num_q % s.num_kv == 0
            ratio = s.num_q // s.num_kv
            for h in range(*s.q):  # the local GQA mapping is the global one
                assert s.kv[0] + (h - s.q[0]) // ratio == h // g
        kv_copies = [sum(s.kv[0] <= j < s.kv[1] for s in shards) for j in range(Hk)]
        assert kv_copies == [max(1, n // Hk)] * Hk
    # Qwen2.5-7B on 8 ranks: 28 query heads as 4,3,4,3,...; each of the 4 KV heads on 2 ranks.
    if shape == "7B":
        assert [TP.head_shard(cfg, 8, r).num_q for r in range(8)] == [4, 3] * 4


def test_split_is_balanced_and_contiguous():
    for items in (1, 7, 250, 151936, 152064):
        for parts in range(1, 9):
            if parts > items:
                continue
            r = [TP.split(items, parts, i) for i in range(parts)]
            assert r[0][0] == 0 and r[-1][1] == items and all(a[1] == b[0] for a, b in zip(r, r[1:]))
            sizes = [b - a for a, b in r]
            assert max(sizes) - min(sizes) <= 1


def _rank_bytes(cfg: Qwen2Config, n: int, itemsize: int = 2) -> list[int]:
    return [sum(plan_numel(TP.TPPlan(cfg, TP.TPGroup(rank=r, world_size=n))).values()) * itemsize
            for r in range(n)]


@pytest.mark.parametrize("shape,n", [("7B", 8), ("32B", 8), ("32B", 4), ("0.5B", 2), ("qwen3-32B", 8),
                                     ("qwen3-0.6B", 2)])
def test_per_rank_weights_of_qwen_shapes(shape, n):
    """bf16 bytes per rank = 1/n of the sharded tensors + the replicated ones (norms; KV heads when
    n > Hk), computed on the meta device by the same plan the loader reads with."""
    cfg = shape_config(shape)
    full = cfg.num_params() * 2
    per_rank = _rank_bytes(cfg, n)
    L, H, D = cfg.num_hidden_layers, cfg.hidden_size, cfg.head_dim
    norms = ((2 * L + 1) * H + (2 * L * D if cfg.qk_norm else 0)) * 2   # Qwen3: + q/k norms per layer
    rep = max(1, n // cfg.num_key_value_heads)
    bias = D if cfg.attention_bias else 0
    kv_extra = L * 2 * (H * D + bias) * cfg.num_key_value_heads * (rep - 1) * 2  # replicated k/v rows
    assert sum(per_rank) == full + (n - 1) * norms + kv_extra
    print(f"\n{shape} TP {n}: full {full / 2**30:.3f} GiB bf16; per rank "
          f"{min(per_rank) / 2**30:.3f}-{max(per_rank) / 2**30:.3f} GiB "
          f"(1/TP = {full / n / 2**30:.3f}); max/ideal {max(per_rank) / (full / n):.4f}")
    assert max(per_rank) <= full / n * 1.08


def test_world_one_is_a_no_op(checkpoints):
    tp = TP.TPGroup()
    m = TP.load_model(checkpoints["gqa62_tied"], tp=tp)
    assert TP.shard_model(m, tp) is m and not hasattr(m, "vocab_range")
    x = torch.randn(3, 250)
    assert TP.gather_logits(x, tp, 250) is x
    assert torch.equal(TP.greedy_argmax(x, tp, 250), x.argmax(-1))
    assert TP.vocab_offset(tp, 250) == 0
    cfg = m.config
    assert TP.cache_config(cfg, tp).num_key_value_heads == cfg.num_key_value_heads


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_load_reads_only_its_ranges(case, checkpoints, tmp_path):
    """Each rank (simulated in one process: loading needs no collectives) holds exactly its ranges of
    the full weights, reads exactly those bytes from disk, and matches shard_model of the full model."""
    path = checkpoints[case]
    full = TP.load_model(path)
    fp = dict(full.named_parameters())
    full_bytes = param_bytes(full)
    # The same weights as a 3-file checkpoint in bf16 (not the parameter dtype: the buffered path).
    bf = tmp_path / "bf16_sharded"
    save_state_dict(dict(full.named_parameters()), full.config, bf, max_shard_size=full_bytes // 6,
                    dtype=torch.bfloat16)
    assert len([f for f in os.listdir(bf) if f.endswith(".safetensors")]) >= 3
    lines = []
    for n in (2, 4):
        read = []
        for r in range(n):
            tp = TP.TPGroup(rank=r, world_size=n)
            plan = TP.TPPlan(full.config, tp)
            stats: dict = {}
            m = TP.load_model(path, tp=tp, stats=stats)
            ref = TP.shard_model(copy.deepcopy(full), tp)
            rp = dict(ref.named_parameters())
            for name, p in m.named_parameters():
                part = plan.part(name)
                want = fp[name] if part is None else fp[name].narrow(part[0], part[1], part[2] - part[1])
                assert torch.equal(p, want), (n, r, name)
                assert torch.equal(p, rp[name]), (n, r, name)
            assert stats["bytes_read"] == param_bytes(m) == sum(plan_numel(plan).values()) * 4
            read.append(stats["bytes_read"])
            st16: dict = {}
            m16 = TP.load_model(bf, dtype=torch.float32, tp=tp, stats=st16)
            assert st16["files"] >= 3 and st16["bytes_read"] == stats["bytes_read"] // 2
            for name, p in m16.named_parameters():
                assert torch.equal(p, dict(m.named_parameters())[name].bfloat16().float()), name
        lines.append(f"TP {n}: bytes read per rank {read} (full {full_bytes}, sum/full {sum(read) / full_bytes:.3f})")
        assert max(read) < full_bytes / n * 1.35  # tiny models: the replicated norms weigh more
    print(f"\n{case}: " + "; ".join(lines))


def test_sharded_load_still_checks_full_shapes(checkpoints, tmp_path):
    path = checkpoints["gqa84_untied"]
    full = TP.load_model(path)
    cfg = full.config
    wrong = Qwen2Config.from_dict({**cfg.to_dict(), "intermediate_size": 100})
    sd = dict(full.named_parameters())
    save_state_dict(sd, cfg, tmp_path)
    wrong.save_pretrained(tmp_path)  # config says 100, tensors have 120
    with pytest.raises(CheckpointError, match="gate_proj.weight has shape"):
        TP.load_model(tmp_path, tp=TP.TPGroup(rank=1, world_size=2))


# --------------------------------------------------------------------------- several processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_reports(tmp, res) -> list[dict]:
    """Each rank's JSON report; a missing one fails with that rank's exit code and output."""
    reports = []
    for r in range(len(res)):
        f = tmp / f"rank{r}.json"
        assert f.exists(), f"rank {r} wrote no report ({res[r][0]}):\n{res[r][1][-2000:]}\n{res[r][2][-4000:]}"
        reports.append(json.loads(f.read_text()))
    return reports


def _launch(world: int, spec: dict, tmp_path, worker: str = "tp_worker.py") -> list[subprocess.Popen]:
    """WORLD_SIZE processes of tests/infer/<worker> with torchrun's environment variables."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    port = str(_free_port())
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1", S1_KERNELS="torch",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, worker), str(spec_file)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


FAILURE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def four_ranks(checkpoints, medium_checkpoint, tmp_path_factory):
    """One launch of 4 ranks (see tests/infer/tp_worker.py): memory, parity, then a dead and a hung rank.
    Returns (per-rank reports, [(returncode, stdout, stderr)] per rank, seconds to the end of 0, 2, 3)."""
    tmp = tmp_path_factory.mktemp("tp4")
    spec = dict(out=str(tmp), cases=list(checkpoints.values()), tp_sizes=[4, 2], memory_case=medium_checkpoint,
                failure_timeout_s=FAILURE_TIMEOUT_S)
    t0 = time.time()
    procs = _launch(4, spec, tmp)
    res = [None] * 4
    try:
        for r in (0, 2, 3):  # rank 1 hangs on purpose
            try:
                res[r] = (*procs[r].communicate(timeout=max(1.0, t0 + 300 - time.time())),)
            except subprocess.TimeoutExpired:
                procs[r].kill()  # our own child, by pid
                res[r] = (*procs[r].communicate(),)
        elapsed = time.time() - t0
    finally:
        if procs[1].poll() is None:
            procs[1].kill()
        res[1] = (*procs[1].communicate(),)
    res = [(p.returncode, *io) for p, io in zip(procs, res)]
    reports = _rank_reports(tmp, res)
    return reports, res, elapsed


def test_each_rank_loads_a_quarter_of_the_weights_into_memory(four_ranks, medium_checkpoint):
    reports, _, _ = four_ranks
    full_mib = param_bytes(TP.load_model(medium_checkpoint)) / 2**20
    mem = [rep["memory"] for rep in reports]
    for m in mem:
        assert m["bytes_read"] == m["weights_mib"] * 2**20 and m["weights_mib"] < full_mib / 4 * 1.02, m
        assert m["peak_growth_mib"] <= m["weights_mib"] * 1.1 + 4, m
    print(f"\nTP 4 load of {full_mib:.1f} MiB of weights: per-rank weights "
          f"{[round(m['weights_mib'], 2) for m in mem]} MiB, peak RSS growth "
          f"{[round(m['peak_growth_mib'], 2) for m in mem]} MiB")


def test_tp4_and_tp2_equal_tp1(four_ranks):
    reports, _, _ = four_ranks
    rows = [row for rep in reports for row in rep["results"]]
    assert len(rows) == 4 * 2 * len(CASES)  # TP 4: 4 ranks; TP 2 x DP 2: 4 ranks; x cases
    worst = dict(prefill=0.0, decode=0.0)
    table = []
    for row in rows:
        cfg = tiny_config(**CASES[row["case"]])
        assert row["prefill_max_abs_diff"] < 1e-5 and row["decode_max_abs_diff"] < 1e-5, row
        assert row["prefill_local_slice_diff"] < 1e-5, row
        assert row["prefill_greedy_equal"] and row["decode_greedy_equal"], row
        assert row["all_reduces_per_forward"] == 2 * cfg.num_hidden_layers + 1, row
        v0, v1 = row["vocab"]
        assert row["local_logits_shape"] == [sum([5, 1, 7]), v1 - v0]
        assert row["bytes_read"] == row["param_bytes"] == row["plan_bytes"], row
        assert row["cache_shape"][3] == row["heads_kv"]
        worst["prefill"] = max(worst["prefill"], row["prefill_max_abs_diff"])
        worst["decode"] = max(worst["decode"], row["decode_max_abs_diff"])
        table.append(f"{row['case']:13s} TP {row['tp']} dp {row['dp_rank']} rank {row['rank']}: heads "
                     f"{row['heads_q']}/{row['heads_kv']} vocab {v1 - v0:3d} param bytes {row['param_bytes']:7d} "
                     f"of {row['full_bytes']} ({row['param_bytes'] / row['full_bytes']:.3f}) read {row['bytes_read']:7d} "
                     f"diff prefill {row['prefill_max_abs_diff']:.1e} decode {row['decode_max_abs_diff']:.1e}")
    # Every rank of every group produced the same greedy tokens (and they are TP 1's).
    for case in CASES:
        toks = {json.dumps(r["tokens"]) for r in rows if r["case"] == case}
        assert len(toks) == 1, case
    print("\n" + "\n".join(sorted(table)))
    print(f"worst |TP - TP1| logits: prefill {worst['prefill']:.2e}, decode {worst['decode']:.2e}")


def test_a_dead_or_hung_rank_makes_its_peer_fail_fast(four_ranks):
    """Rank 3 exits: rank 2 (same TP-2 group) raises TPError at once. Rank 1 hangs: rank 0 raises
    TPError when the 3 s process-group timeout passes. Neither waits forever."""
    _, res, elapsed = four_ranks
    assert res[3][0] == 3, res[3][2][-2000:]
    lines = []
    for r, partner, what in ((2, 3, "exited"), (0, 1, "hung")):
        rc, so, se = res[r]
        assert f"rank {r} ready" in so, se[-3000:]
        assert rc != 0 and f"rank {r}: no error" not in so, (so, se[-3000:])
        assert "TPError" in se and "another rank exited or stopped answering" in se, se[-3000:]
        secs = float(so.split(f"rank {r} raised TPError after ")[1].split(" s")[0])
        if what == "exited":
            assert secs < FAILURE_TIMEOUT_S, so
        else:
            assert FAILURE_TIMEOUT_S - 0.5 <= secs <= FAILURE_TIMEOUT_S + 5, so
        err = [line for line in se.splitlines() if "tensor_parallel.TPError:" in line][-1]
        lines.append(f"rank {partner} {what}: rank {r} raised TPError after {secs:.2f} s: {err[:330]}")
    print("\n" + "\n".join(lines) + f"\n(whole 4-rank launch, start to the last exit: {elapsed:.1f} s)")


# ======================================================================================= phase 2
# The sampler over a vocabulary split across ranks, in one process: every shard's stage 1, then
# stage 2 on the stacked partials, against the unsharded op (torch reference and Triton kernels).

@pytest.mark.parametrize("world", [2, 4])
def test_sharded_sampler_equals_the_unsharded_one(world):
    """Random force-state tables (every phase; greedy and Gumbel rows), padded ids with the highest
    logits (in the last shard), end ids dominating, a NaN, an all -inf row, exact ties across a
    shard boundary, uneven shards: stage 1 per shard (`sample_partials`) + stage 2 on the stacked
    partials (`force_from_partials`) gives the unsharded op's tokens and state bit for bit. The
    torch reference and the Triton kernels (interpreter) produce the same partials (one format:
    either stage 2 takes either's), and sample_and_force(id_offset=, gather=) -- the engine's
    call -- does the same."""
    pytest.importorskip("s1.kernels.triton_ops")          # no CUDA: turns on the interpreter before triton loads
    from tests.kernels.helpers import V, VOCAB, clone, random_logits, random_tables
    from s1.kernels import reference as ref
    from s1.kernels import sampling
    dev = "cuda" if torch.cuda.is_available() else "cpu"

    class tri:   # the Triton ops on `dev` (CUDA, or CPU tensors in the interpreter); results on the CPU
        __name__ = "triton"

        @staticmethod
        def sample_partials(x, rows, tables, vocab, off):
            return sampling.sample_partials(x.to(dev), rows.to(dev), clone(tables, dev), vocab, off).cpu()

        @staticmethod
        def force_from_partials(parts, rows, tables, vocab, pad):
            t = clone(tables, dev)
            out = sampling.force_from_partials(parts.to(dev), rows.to(dev), t, vocab, pad).cpu()
            tables.state.copy_(t.state.cpu())
            return out

        @staticmethod
        def sample_and_force(x, rows, tables, vocab, pad, id_offset, gather):
            t = clone(tables, dev)
            out = sampling.sample_and_force(x.to(dev), rows.to(dev), t, vocab, pad, id_offset=id_offset,
                                            gather=lambda p: gather(p.cpu()).to(dev)).cpu()
            tables.state.copy_(t.state.cpu())
            return out
    R, B = 32, 16
    tables = random_tables(R, seed=world)
    rows = torch.randperm(R, generator=torch.Generator().manual_seed(world))[:B]
    logits = random_logits(B, seed=10 + world)
    shards = [TP.split(V, world, r) for r in range(world)]
    logits[0, 5] = float("nan")
    logits[1, :] = float("-inf")
    b = shards[0][1]                                            # ids b-1 and b tie across the boundary
    logits[2, b - 1] = logits[2, b] = 1e4
    want_t = clone(tables)
    want = ref.sample_and_force(logits, rows, want_t, VOCAB, 7)
    assert (want[0] < VOCAB).all()
    parts = {impl: [impl.sample_partials(logits[:, a:z].contiguous(), rows, tables, VOCAB, a) for a, z in shards]
             for impl in (ref, tri)}
    for x, y in zip(parts[ref], parts[tri]):
        assert torch.equal(x[1], y[1])                          # the same winners (global ids)
        # the same scores: bit for bit on CUDA; the interpreter's log is numpy's (an ulp apart at most)
        torch.testing.assert_close(x[0].view(torch.float32), y[0].view(torch.float32), rtol=2e-7, atol=0)
    for stage1, stage2 in ((ref, ref), (tri, tri), (ref, tri), (tri, ref)):
        stacked = torch.stack(parts[stage1])
        assert stacked.dtype == torch.int32 and tuple(stacked.shape) == (world, 2, 2, B)
        t = clone(tables)
        assert torch.equal(stage2.force_from_partials(stacked, rows, t, VOCAB, 7), want), (stage1.__name__,
                                                                                          stage2.__name__)
        assert torch.equal(t.state, want_t.state)
    for impl in (ref, tri):
        t = clone(tables)              # the engine's call on the last rank, the others' partials given
        a, z = shards[-1]
        got = impl.sample_and_force(logits[:, a:z].contiguous(), rows, t, VOCAB, 7, id_offset=a,
                                    gather=lambda p: torch.stack(parts[ref][:-1] + [p]))
        assert torch.equal(got, want) and torch.equal(t.state, want_t.state), impl.__name__


def test_noise_of_a_shard_is_the_unsharded_noise():
    from s1.kernels import reference as ref
    seed, pos = torch.tensor([3, 2 ** 40 + 1]), torch.tensor([0, 17])
    full = ref.uniform_noise(seed, pos, 1000)
    assert torch.equal(ref.uniform_noise(seed, pos, 300, id_offset=600), full[:, 600:900])
    assert torch.equal(uniform_noise_i64(seed, pos, 1000), full)


# ----------------------------------------------------------------- the engine, several processes

ENGINE_END_IDS = (151644, 151645)   # <|im_start|>, <|im_end|>: end thinking; <|im_end|> also stops answers
REAL_VOCAB = 151665                 # the Qwen2.5 tokenizer's; the checkpoint pads to 151,936 rows


def engine_checkpoint(path, tok_dir, seed: int = 0) -> str:
    """A random-weight fp32 Qwen2 checkpoint with the real tokenizer, shaped so that budget forcing
    has work to do: the residual stream's dimension 0 is a constant (no layer writes it), so the LM
    head's column 0 (zero elsewhere) adds a positive amount to chosen logits: the end-of-thinking
    ids win at about half the steps (extensions, natural ends, answer stops), and the 271 padded ids get +100 (they
    would win every step were they not excluded). 4 query / 2 KV heads: TP 4 replicates KV heads.
    Untied: 2 x 151,936 x 64 fp32 = 74 MiB of vocabulary tables (the per-rank memory check)."""
    from s1 import kernels as K
    cfg = Qwen2Config(vocab_size=151936, hidden_size=64, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, num_hidden_layers=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
                      rope_theta=10000.0, tie_word_embeddings=False, torch_dtype="float32")
    g = torch.Generator().manual_seed(seed)
    m = Qwen2ForCausalLM(cfg)
    ends = list(ENGINE_END_IDS)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if not n.endswith("norm.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        m.model.embed_tokens.weight[:, 0] = 1.0
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        W = m.lm_head.weight
        W[:, 0] = 0.0                       # column 0 only lifts the padded ids and, below, the end ids
        W[REAL_VOCAB:, 0] = 100.0
        ids = torch.randint(0, REAL_VOCAB, (64, 24), generator=g)
        with K.use_backend("torch"):
            base = m(ids)[:, -1]
            W[ends, 0] = 1.0
            x0 = m(ids)[:, -1, ends[0]] - base[:, ends[0]]    # the normed constant dimension, > 0
        others = base[:, :REAL_VOCAB].clone()
        others[:, ends] = -float("inf")
        gap = (others.max(-1).values[:, None] - base[:, ends]) / x0[:, None]
        W[ends[0], 0] = gap[:, 0].quantile(0.5)
        W[ends[1], 0] = gap[:, 1].quantile(0.3)
    save_model(m, path, tokenizer_dir=tok_dir)
    return str(path)


BF = dict(max_thinking_tokens=12, num_wait=2, min_thinking_tokens=3, max_answer_tokens=6)
ENGINE_REQUESTS = [   # (prompt, SamplingParams fields): greedy, seeded sampling, a random seed, top-k
    ["What is 2+2?", BF],
    ["Name a prime number larger than 10.", BF],
    ["Why is the sky blue?", dict(max_thinking_tokens=8, max_answer_tokens=8)],
    ["What is 2+2?", dict(BF, num_wait=1, temperature=0.8, seed=5)],
    ["Name a prime number larger than 10.", dict(BF, num_wait=1, max_thinking_tokens=16, temperature=1.0,
                                                 seed=2 ** 40 + 3)],
    ["Why is the sky blue?", dict(max_thinking_tokens=10, temperature=1.0, top_k=20, seed=9, max_answer_tokens=6)],
    ["What is 3+5?", dict(BF, temperature=1.0)],    # seed None: drawn from the engine's generator
]
ENGINE_SETTINGS = dict(num_pages=128, max_num_seqs=16, max_model_len=512)


@pytest.fixture(scope="module")
def engine_model(tmp_path_factory):
    from tests.conftest import require_shared_data
    tok = require_shared_data() / "qwen2.5-tokenizer"
    return engine_checkpoint(tmp_path_factory.mktemp("tp_engine") / "ckpt", tok), str(tok)


@pytest.fixture(scope="module")
def engine_ranks(engine_model, tmp_path_factory):
    """One launch of 4 ranks of tests/infer/tp_engine_worker.py (TP 4, then TP 2 x DP 2, then rank 3
    dies mid-generation) and, meanwhile in this process, the same requests at TP 1."""
    from s1 import kernels as K
    from s1.infer.llm import LLM
    from s1.infer.sampling import SamplingParams
    model, tok = engine_model
    tmp = tmp_path_factory.mktemp("tp_engine_run")
    spec = dict(out=str(tmp), model=model, tokenizer=tok, requests=ENGINE_REQUESTS, tp_sizes=[4, 2],
                engine=ENGINE_SETTINGS, failure_timeout_s=20, die_after_steps=4)
    t0 = time.time()
    procs = _launch(4, spec, tmp, worker="tp_engine_worker.py")
    try:
        with K.use_backend("torch"), LLM(model, **ENGINE_SETTINGS) as llm:
            outs = llm.generate([p for p, _ in ENGINE_REQUESTS], [SamplingParams(**kw) for _, kw in ENGINE_REQUESTS],
                                use_tqdm=False)
            tp1 = dict(outputs=[{k: getattr(o, k) for k in ("output_token_ids", "num_thinking_tokens", "num_waits_used",
                                                            "finish_reason", "answer", "max_thinking_tokens", "error")}
                                for o in outs], full_weights_mib=param_bytes(llm.model) / 2**20)
        res = []
        for p in procs:
            try:
                res.append((*p.communicate(timeout=max(1.0, t0 + 400 - time.time())),))
            except subprocess.TimeoutExpired:
                p.kill()   # our own child, by pid
                res.append((*p.communicate(),))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    res = [(p.returncode, *io) for p, io in zip(procs, res)]
    reports = _rank_reports(tmp, res)
    died = json.loads((tmp / "died.json").read_text()) if (tmp / "died.json").exists() else None
    return tp1, reports, res, died, time.time() - t0


def test_engine_tp4_and_tp2_generate_the_tp1_tokens(engine_ranks):
    """LLM.generate at TP 4 and at TP 2 (x DP 2) gives TP 1's outputs on every rank: greedy and
    seeded sampling, budget forcing (caps, extensions, the minimum, natural ends, answer stops),
    top-k (its sort pre-pass gathers the full logits); never a padded id (they hold the largest
    logits, in the last rank's shard). The request without a seed is identical on every rank of a
    group (rank 0's seed generator), so it is only compared within groups."""
    tp1, reports, _, _, _ = engine_ranks
    seeded = [i for i, (_, kw) in enumerate(ENGINE_REQUESTS) if kw.get("temperature", 0) == 0 or "seed" in kw]
    want = [tp1["outputs"][i] for i in seeded]
    lines = []
    for rep in reports:
        assert [run["tp"] for run in rep["runs"]] == [4, 2]
        for run in rep["runs"]:
            got = [run["outputs"][i] for i in seeded]
            for i, (a, b) in zip(seeded, zip(got, want)):
                assert a == b, (run["tp"], run["rank"], i, a, b)
            lines.append(f"TP {run['tp']} dp {run['dp_rank']} rank {run['rank']}: vocab {run['vocab_range']}, "
                         f"{run['kv_heads']} KV head(s), {run['num_pages']} pages, {run['steps']} steps, "
                         f"build {run['build_s']:.1f} s, generate {run['generate_s']:.1f} s")
    for tp, dp in ((4, 0), (2, 0), (2, 1)):   # the unseeded request: the same on every rank of a group
        group = [run["outputs"] for rep in reports for run in rep["runs"] if run["tp"] == tp and run["dp_rank"] == dp]
        assert len(group) == tp and all(g == group[0] for g in group)
    outs = tp1["outputs"]
    toks = [t for o in outs for t in o["output_token_ids"]]
    assert max(toks) < REAL_VOCAB and all(o["error"] is None for o in outs)
    # budget forcing had work to do
    assert any(o["num_waits_used"] > 0 for o in outs)
    assert any(o["finish_reason"] == "stop" for o in outs) and any(o["finish_reason"] == "length" for o in outs)
    assert any(o["num_thinking_tokens"] < (o["max_thinking_tokens"] or 0) for o in outs)     # a natural end
    assert any(o["num_thinking_tokens"] == o["max_thinking_tokens"] for o in outs)           # a forced end
    print("\n" + "\n".join(lines) + f"\n{len(toks)} output tokens in {len(outs)} requests, "
          f"{sum(o['num_waits_used'] for o in outs)} extensions; finish reasons "
          f"{sorted(set(o['finish_reason'] for o in outs))}")


def test_engine_rank_holds_a_quarter_of_the_weights(engine_ranks):
    """Building the TP-4 engine (sharded load, KV cache, tables) grows each rank's peak RSS by its
    quarter of the weights, not by the whole model. Measured on a second build in the process
    (tests/tp_engine_worker.py::measure_build): the first also pays one-time costs that are not
    the engine's (torch's library pages run for the first time, which vary by machine, new
    threads' malloc arenas); they are printed. The growth must also reach the weights: the
    measured build allocates its own, it does not reuse resident memory."""
    tp1, reports, _, _, _ = engine_ranks
    full = tp1["full_weights_mib"]
    mem = [rep["memory"] for rep in reports]
    for m in mem:
        assert m is not None and m["tp"] == 4, "VmHWM could not be reset (/proc/self/clear_refs)"
        assert m["weights_mib"] < full / 4 * 1.02
        # a rank holding the whole model would grow by 74.5 MiB; its quarter plus the KV cache is 19.1
        assert m["weights_mib"] <= m["peak_growth_mib"] <= m["weights_mib"] + m["kv_cache_mib"] + 8, m
    print(f"\nTP 4 engine, {full:.1f} MiB of weights: per-rank weights {[round(m['weights_mib'], 1) for m in mem]} MiB, "
          f"peak RSS growth while building the engine {[round(m['peak_growth_mib'], 1) for m in mem]} MiB "
          f"(KV cache {mem[0]['kv_cache_mib']:.2f} MiB; at the end anonymous "
          f"{[round(m['anon_growth_mib'], 1) for m in mem]}, file-backed {[round(m['file_growth_mib'], 1) for m in mem]} MiB); "
          f"the process's first build: {[round(m['first_build_peak_growth_mib'], 1) for m in mem]} MiB, of which "
          f"file-backed {[round(m['first_build_file_growth_mib'], 1) for m in mem]} MiB")


def test_engine_rank_death_makes_its_peer_fail_fast(engine_ranks):
    """Rank 3 exits after 4 engine steps of a TP-2 generation: rank 2's next engine step raises
    TPError (naming the step and the cause) at once, not after the 20 s timeout."""
    _, _, res, died, elapsed = engine_ranks
    assert res[3][0] == 3 and died is not None and died["rank"] == 3, res[3][2][-2000:]
    for r in (0, 1):
        assert res[r][0] == 0 and f"rank {r} ready" in res[r][1], res[r][2][-3000:]
    rc, so, se = res[2]
    assert "rank 2 ready" in so and rc != 0, se[-3000:]
    assert "TPError" in se and "another rank exited or stopped answering" in se and "engine step" in se, se[-3000:]
    at = float(so.split("rank 2 raised TPError at ")[1].split(" ")[0])
    assert at - died["at"] < 10, (at, died)
    err = [line for line in se.splitlines() if "tensor_parallel.TPError:" in line][-1]
    print(f"\nrank 3 exited at engine step {died['step']}; rank 2 raised {at - died['at']:.2f} s later: {err[:300]}"
          f"\n(whole 4-rank launch: {elapsed:.1f} s)")


# --------------------------------------------------------------- data-parallel evaluation (torchrun)

EVAL_ARGS = ["--task", "aime24", "--limit", "3", "--budgets", "4,12", "--num-wait", "0,1", "--max-answer-tokens", "6",
             "--no-progress", "--threads", "1"]


def _torchrun(nproc: int, argv: list[str], module: str = "s1.evaluation", timeout: float = 300):
    """`torchrun --standalone --nproc-per-node N -m MODULE ARGV` (gloo on CPU, torch kernels)."""
    env = dict(os.environ, S1_KERNELS="torch", OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", module, *argv]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_data_parallel_eval_writes_the_single_process_records(engine_model, tmp_path):
    """`torchrun --nproc-per-node 2 -m s1.evaluation` (DP 2) and `torchrun --nproc-per-node 4 -m s1.evaluation
    --tensor-parallel 2 --resume` (TP 2 x DP 2, resuming an interrupted data-parallel run: 3 records
    in samples.jsonl, 2 in group 1's samples.dp1.jsonl) write samples.jsonl and summary.json byte
    for byte as one process does; the part files are merged and removed."""
    from s1 import kernels as K
    from s1.evaluation import cli
    from tests.conftest import require_shared_data
    model, _ = engine_model
    common = ["--model", model, "--data-dir", str(require_shared_data() / "eval"), *EVAL_ARGS]
    one = tmp_path / "one"
    t0 = time.time()
    with K.use_backend("torch"):
        assert cli.main(common + ["--out", str(one)]) == 0
    t_one = time.time() - t0
    want = (one / "samples.jsonl").read_bytes()
    lines = want.decode().splitlines(keepends=True)
    assert len(lines) == 3 * 4

    t0 = time.time()
    dp2 = tmp_path / "dp2"
    r = _torchrun(2, common + ["--out", str(dp2)])
    t_dp2 = time.time() - t0
    assert r.returncode == 0, r.stderr[-4000:]
    assert "over 2 data-parallel engines" in r.stderr, r.stderr[-2000:]
    assert (dp2 / "samples.jsonl").read_bytes() == want
    assert (dp2 / "summary.json").read_bytes() == (one / "summary.json").read_bytes()
    assert sorted(os.listdir(dp2)) == sorted(os.listdir(one))

    res = tmp_path / "resume"
    res.mkdir()
    (res / "config.json").write_bytes((one / "config.json").read_bytes())
    (res / "samples.jsonl").write_text("".join(lines[:3]))
    (res / "samples.dp1.jsonl").write_text("".join(lines[6:8]))
    t0 = time.time()
    r = _torchrun(4, common + ["--out", str(res), "--resume", "--tensor-parallel", "2"])
    t_res = time.time() - t0
    assert r.returncode == 0, r.stderr[-4000:]
    assert (res / "samples.jsonl").read_bytes() == want and not (res / "samples.dp1.jsonl").exists()
    assert (res / "summary.json").read_bytes() == (one / "summary.json").read_bytes()
    timing = json.loads((res / "timing.json").read_text())
    assert timing["finished_earlier"] == 5 and timing["generated"] == 12 - 5, timing
    print(f"\nrecords byte-identical: 1 process {t_one:.1f} s; torchrun DP 2 {t_dp2:.1f} s; torchrun TP 2 x DP 2 "
          f"--resume (5 of 12 done) {t_res:.1f} s")


def test_generate_cli_under_torchrun_writes_the_single_process_records(engine_model, tmp_path, capsys):
    """`torchrun --nproc-per-node 2 -m s1.infer --tensor-parallel 2 ...` (seeded sampling, budget
    forcing) writes --out byte for byte as one process does, from rank 0 alone; without torchrun
    --tensor-parallel 2 is refused with the command to run."""
    from s1 import kernels as K
    from s1.infer.cli import generate_main
    model, _ = engine_model
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q, "id": f"q{i}"}) + "\n" for i, q in
                               enumerate(["What is 2+2?", "Name a prime number.", "Why is the sky blue?"])))
    args = ["--model", model, "--prompts", str(prompts), "--max-thinking-tokens", "8", "--num-wait", "1",
            "--min-thinking-tokens", "2", "--max-answer-tokens", "4", "--temperature", "0.7", "--seed", "3",
            "--no-progress", "--threads", "1", "--num-pages", "64", "--max-model-len", "256"]
    assert generate_main(args + ["--out", str(tmp_path / "x.jsonl"), "--tensor-parallel", "2"]) == 2
    assert "torchrun --nproc-per-node 2 -m s1.infer --tensor-parallel 2" in capsys.readouterr().err
    with K.use_backend("torch"):
        assert generate_main(args + ["--out", str(tmp_path / "one.jsonl")]) == 0
    r = _torchrun(2, args + ["--out", str(tmp_path / "tp2.jsonl"), "--tensor-parallel", "2"], module="s1.infer")
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "tp2.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert r.stderr.count("record(s) ->") == 1          # rank 0 alone reports (and writes)
