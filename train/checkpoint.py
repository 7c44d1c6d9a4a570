"""Sharded, atomic training checkpoints (torch.distributed.checkpoint) and the final HF export.

Layout under `<out>/checkpoints/`:
  step_00000040/            a complete checkpoint (only complete ones carry this name)
    .metadata, __*_*.distcp   DCP: model + optimizer state, each rank writes its own shards
    train_state.pt          rank 0: step, data position, scheduler state, run config
    rng_rank{r}.pt          rank r: torch CPU (+ CUDA) generator states
  step_00000060.tmp/        a save in progress (or one interrupted by a kill): never loaded
Atomicity: every rank writes into `step_N.tmp/`; after a barrier rank 0 writes train_state.pt
last, fsyncs, and renames the directory to `step_N` (a rename within one filesystem is atomic).
Only then are older checkpoints deleted, so a kill at any moment leaves the previous checkpoint
usable. Multi-node runs need `--out` on a filesystem shared by all nodes.
"""
from __future__ import annotations

import os
import re
import shutil

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_state_dict, set_state_dict)

_STEP_RE = re.compile(r"step_(\d{8})")


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not supported on every filesystem; the rename is still atomic
        pass


def checkpoint_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:08d}")


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """Complete checkpoints under `root`, oldest first (tmp dirs and stray files are ignored)."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = _STEP_RE.fullmatch(name)
        path = os.path.join(root, name)
        if m and os.path.exists(os.path.join(path, "train_state.pt")):
            out.append((int(m.group(1)), path))
    return sorted(out)


def latest_checkpoint(root: str) -> str | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def save_checkpoint(root: str, step: int, model, optimizer, train_state: dict, keep: int = 1) -> str:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    final = checkpoint_dir(root, step)
    tmp = final + ".tmp"
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        if os.path.exists(tmp):  # left over from a save that was killed
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
    torch.save(_rng_state(), os.path.join(tmp, f"rng_rank{rank}.pt"))
    _barrier()
    if rank == 0:
        # train_state.pt is written last: its presence marks the directory complete.
        state_file = os.path.join(tmp, "train_state.pt")
        with open(state_file, "wb") as f:
            torch.save(train_state, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if os.path.exists(final):  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for s, path in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(path: str, model, optimizer) -> dict:
    """Collective: restore model + optimizer shards (resharding if the world size changed), this
    rank's RNG state (when saved with the same world size) and return train_state."""
    if not os.path.exists(os.path.join(path, "train_state.pt")):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no train_state.pt)")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train_state = torch.load(os.path.join(path, "train_state.pt"), weights_only=False)
    rng_file = os.path.join(path, f"rng_rank{rank}.pt")
    if train_state.get("world_size") == world and os.path.exists(rng_file):
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return train_state


def export_hf(model, cfg, path: str, tokenizer=None, dtype: torch.dtype | None = None,
              max_shard_size="5GB") -> None:
    """Collective: gather the full state dict (rank 0, CPU) and write an HF checkpoint directory
    loadable by transformers and model.loading.load_model, plus the tokenizer files."""
    from model.loading import save_state_dict
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cfg.max_window_layers is None:
        # transformers 5 rejects a null max_window_layers (a from-scratch config may lack it); it is
        # inert without sliding windows, so write HF's meaning of "all layers full attention".
        from model.config import Qwen2Config
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "max_window_layers": cfg.num_hidden_layers})
    if rank == 0:
        tok_dir = getattr(tokenizer, "path", None)
        save_state_dict(full, cfg, path, max_shard_size=max_shard_size, dtype=dtype, tokenizer_dir=tok_dir)
        if tokenizer is not None and tok_dir is None:
            tokenizer.save_pretrained(path)
    del full
    _barrier()
