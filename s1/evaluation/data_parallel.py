"""Data parallelism for evaluation sweeps: a torchrun world of dp_size x tp_size ranks runs
dp_size engines (each a tensor-parallel group, `s1.infer.tensor_parallel.init_tensor_parallel`),
each on an interleaved share of the sweep's requests; the records travel to global rank 0.
Its only user is `s1 eval` (s1/evaluation/cli.py, s1/evaluation/sweep.py).
"""
from __future__ import annotations

import datetime

import torch.distributed as dist

from s1.infer.tensor_parallel import TPGroup

# DP groups finish their shares of a sweep at different times; the records gather waits for the
# slowest (a peer that exits still fails it at once: its connections close).
DP_GATHER_TIMEOUT_S = 7 * 24 * 3600.0


class DataParallel:
    """The data-parallel side of a torchrun world of dp_size x tp_size ranks (`init_tensor_parallel`:
    consecutive ranks form a TP group; TP group k is DP rank k). Each DP group runs its own engine on
    its share of the work (`shard`: an interleaved slice); host objects (records) travel over a
    gloo group of the whole world with a long timeout (DP_GATHER_TIMEOUT_S).

    leader: this rank is its TP group's rank 0 (writes its group's records as they finish);
    writer: global rank 0 (writes the run's outputs). World 1: every method is a local no-op.
    Every rank must construct it (group creation is collective), in the same order."""

    def __init__(self, tp: TPGroup, timeout_s: float = DP_GATHER_TIMEOUT_S):
        self.tp = tp
        self.rank, self.size = tp.dp_rank, tp.dp_size
        self.distributed = dist.is_initialized() and dist.get_world_size() > 1
        self.global_rank = dist.get_rank() if self.distributed else 0
        self.leader = tp.rank == 0
        self.writer = self.global_rank == 0
        self.group = (dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
                      if self.distributed else None)

    def shard(self, items: list) -> list:
        """This DP group's share: every size-th item from its rank (interleaved, so each group gets
        a like mix of a point-major request list)."""
        return list(items)[self.rank::self.size]

    def broadcast(self, obj):
        """Global rank 0's `obj` on every rank (pickled)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's `obj` on every rank, in global rank order (pickled)."""
        if not self.distributed:
            return [obj]
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on global rank 0, in global rank order; None on the other ranks."""
        if not self.distributed:
            return [obj]
        out = [None] * dist.get_world_size() if self.writer else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)
