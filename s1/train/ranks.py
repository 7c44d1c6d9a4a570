"""Rank-0-only work that cannot hang the other ranks, and agreement on success.

`on_rank0(fn)`: rank 0 runs fn; its result, or its failure, is broadcast, so every rank returns
the same value or raises the same error (a rank-0 failure never leaves the others blocked in the
next collective until the process-group timeout). `agree(ok, why)`: every rank reports whether
its own part worked; all of them raise when any failed, naming the failed ranks.
"""
from __future__ import annotations

import torch.distributed as dist


class RankFailed(RuntimeError):
    """Another rank's part of a collective step failed (the message says which and why)."""


def _world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def on_rank0(fn, what: str = "a rank-0 step"):
    rank, world = _world()
    box = [None]
    err = None
    if rank == 0:
        try:
            box = [("ok", fn())]
        except Exception as e:  # noqa: BLE001 - re-raised below on every rank
            err = e
            box = [("err", type(e).__name__, str(e), isinstance(e, ValueError))]
    if world > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0][0] == "ok":
        return box[0][1]
    if err is not None:
        raise err
    _, name, msg, is_value = box[0]
    cls = ValueError if is_value else RankFailed
    raise cls(f"{msg} (rank 0, {what}: {name})" if not is_value else msg)


def agree(ok: bool, why: str = "", what: str = "a collective step") -> None:
    rank, world = _world()
    if world == 1:
        if not ok:
            raise RankFailed(f"{what}: {why}")
        return
    flags = [None] * world
    dist.all_gather_object(flags, (ok, why))
    bad = [(r, w) for r, (o, w) in enumerate(flags) if not o]
    if bad:
        raise RankFailed(f"{what} failed on rank(s) " + "; ".join(f"{r}: {w}" for r, w in bad))


def agree_on(err: BaseException | None, what: str) -> None:
    """`agree` on a step whose outcome on this rank is `err` (None: it went well). Every rank
    raises when any rank failed: a rank whose own step failed re-raises its own exception (its type
    and traceback kept), the others RankFailed naming the failed rank(s)."""
    try:
        agree(err is None, f"{type(err).__name__}: {err}", what)
    except RankFailed:
        if err is not None:
            raise err
        raise
