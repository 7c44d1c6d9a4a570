"""One rank of the tensor-parallel tests: tests/infer/test_tensor_parallel.py starts 4 of these with
torchrun's environment variables. argv[1]: a JSON spec {"out", "cases", "tp_sizes", "memory_case",
"failure_timeout_s"}. In order:

1. memory: the peak RSS growth of loading this rank's TP-4 shard of "memory_case".
2. parity: for every TP size (4, then 2 x DP 2) and checkpoint, load this rank's shard (counting
   bytes read) and the whole model (TP = 1), run a packed prefill of three sequences and decode
   steps through a ContiguousKVCache; write the worst logit differences, greedy tokens, parameter
   bytes and collective counts to out/rank{R}.json.
3. failure, on new TP-2 groups with a short timeout: rank 3 exits (its partner, rank 2, must raise
   TPError at its next collective) and rank 1 hangs (its partner, rank 0, must raise TPError once
   the timeout passes); the test kills rank 1.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

from s1.infer import tensor_parallel as TP
from s1.model import loading
from tests._lib_helpers import ContiguousKVCache, kv_cache_shape, param_bytes, plan_numel
from s1.model.config import Qwen2Config

LENS = [5, 1, 7]   # packed prefill: three prompts, one of a single token
DECODE_STEPS = 3


def _ids(cfg: Qwen2Config, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (n,), generator=g)


class _CountAllReduce:
    """Counts dist.all_reduce calls (the model's collectives) while active."""

    def __enter__(self):
        self.n, self._orig = 0, dist.all_reduce

        def counted(*a, **k):
            self.n += 1
            return self._orig(*a, **k)
        dist.all_reduce = counted
        return self

    def __exit__(self, *exc):
        dist.all_reduce = self._orig


@torch.no_grad()
def run_case(path: str, tp: TP.TPGroup) -> dict:
    cfg = Qwen2Config.from_pretrained(path)
    V = cfg.vocab_size
    ref = loading.load_model(path)
    stats: dict = {}
    model = TP.load_model(path, tp=tp, stats=stats)
    plan = TP.TPPlan(cfg, tp)
    out = dict(case=os.path.basename(path), tp=tp.world_size, rank=tp.rank, dp_rank=tp.dp_rank,
               heads_q=plan.heads.num_q, heads_kv=plan.heads.num_kv, vocab=list(plan.vocab),
               bytes_read=stats["bytes_read"], param_bytes=param_bytes(model),
               plan_bytes=sum(plan_numel(plan).values()) * 4, full_bytes=param_bytes(ref))

    # Packed prefill, no cache: all positions' logits.
    ids = _ids(cfg, sum(LENS), seed=11)
    cu = torch.tensor([0, *torch.tensor(LENS).cumsum(0).tolist()], dtype=torch.int32)
    full = ref(ids, cu_seqlens=cu, max_seqlen=max(LENS))
    with _CountAllReduce() as c:
        local = model(ids, cu_seqlens=cu, max_seqlen=max(LENS))
    out["all_reduces_per_forward"] = c.n
    out["local_logits_shape"] = list(local.shape)
    out["prefill_max_abs_diff"] = (TP.gather_logits(local, tp, V) - full).abs().max().item()
    out["prefill_local_slice_diff"] = (local - full[:, plan.vocab[0]:plan.vocab[1]]).abs().max().item()
    out["prefill_greedy_equal"] = bool(torch.equal(TP.greedy_argmax(local, tp, V), full.argmax(-1)))

    # Prefill into a KV cache, then decode steps; both models are fed TP 1's greedy tokens.
    slots = list(range(len(LENS)))
    c_ref = ContiguousKVCache(cfg, len(LENS), 32, dtype=torch.float32)
    c_tp = ContiguousKVCache(TP.cache_config(cfg, tp), len(LENS), 32, dtype=torch.float32)
    out["cache_shape"] = list(c_tp.k.shape)
    assert tuple(c_tp.k.shape) == kv_cache_shape(cfg, tp, len(LENS), 32)
    last = cu[1:].long() - 1
    num_new, step_ids, diffs, tokens, greedy_equal = list(LENS), ids, [], [], True
    for step in range(1 + DECODE_STEPS):
        pos = c_ref.prepare(slots, num_new)
        assert torch.equal(pos, c_tp.prepare(slots, num_new))
        idx = last if step == 0 else None
        a = ref(step_ids, positions=pos, kv_cache=c_ref, logits_indices=idx)
        b = model(step_ids, positions=pos, kv_cache=c_tp, logits_indices=idx)
        c_ref.advance()
        c_tp.advance()
        diffs.append((TP.gather_logits(b, tp, V) - a).abs().max().item())
        nxt = a.argmax(-1)
        greedy_equal &= bool(torch.equal(TP.greedy_argmax(b, tp, V), nxt))
        tokens.append(nxt.tolist())
        step_ids, num_new = nxt, [1] * len(LENS)
    out["decode_max_abs_diff"] = max(diffs)
    out["decode_greedy_equal"] = greedy_equal
    out["tokens"] = tokens
    return out


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return int([line for line in f if line.startswith(key + ":")][0].split()[1]) / 1024


def measure_load_memory(path: str, rank: int, world: int) -> dict:
    """Peak RSS growth of loading this rank's TP-`world` shard, first thing in the process (VmHWM
    is this exec's own peak; ru_maxrss would keep the parent's). Building any model on the meta
    device first imports the meta kernels (~150 MB of Python, independent of the model): that is
    paid before the baseline. No collectives: a TPGroup without a process group suffices to load."""
    from s1.model.qwen2 import Qwen2ForCausalLM
    with torch.device("meta"):
        Qwen2ForCausalLM(Qwen2Config.from_pretrained(path))
    base = _status_mib("VmRSS")
    assert _status_mib("VmHWM") - base < 8, "the baseline must be the peak so far"
    stats: dict = {}
    m = TP.load_model(path, tp=TP.TPGroup(rank=rank, world_size=world), stats=stats)
    out = dict(peak_growth_mib=_status_mib("VmHWM") - base, weights_mib=param_bytes(m) / 2**20,
               bytes_read=stats["bytes_read"])
    del m
    return out


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    t0 = time.time()
    memory = measure_load_memory(spec["memory_case"], rank, world)
    results = []
    for tp_size in spec["tp_sizes"]:
        tp = TP.init_tensor_parallel(tp_size, timeout_s=120)
        tp.check_peers()
        for path in spec["cases"]:
            with tp.guard(f"case {path}"):
                results.append(run_case(path, tp))
    with open(os.path.join(spec["out"], f"rank{rank}.json"), "w") as f:
        json.dump(dict(results=results, memory=memory, seconds=time.time() - t0), f)

    tp = TP.init_tensor_parallel(2, timeout_s=spec["failure_timeout_s"])
    path = spec["cases"][0]
    model = TP.load_model(path, tp=tp)
    tp.check_peers()
    print(f"rank {rank} ready", flush=True)
    if rank == 3:
        os._exit(3)
    if rank == 1:
        time.sleep(120)  # the test kills this process
        os._exit(0)
    time.sleep(0.5)  # let rank 3 exit and rank 1 fall asleep
    t1 = time.time()
    try:
        with tp.guard("a decode step"), torch.no_grad():
            model(_ids(Qwen2Config.from_pretrained(path), 4, seed=1))
    except TP.TPError:
        print(f"rank {rank} raised TPError after {time.time() - t1:.2f} s", flush=True)
        raise
    print(f"rank {rank}: no error", flush=True)  # the test fails on this


if __name__ == "__main__":
    main()
