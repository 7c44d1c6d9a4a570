"""Sharded, atomic training checkpoints (torch.distributed.checkpoint) and the final HF export.

Layout under `<out>/checkpoints/`:
  step_00000040/            a complete checkpoint (only complete ones carry this name)
    .metadata, __*_*.distcp   DCP: model + optimizer state, each rank writes its own shards
    train_state.pt          rank 0: step, data position, scheduler state, run config
    rng_rank{r}.pt          rank r: torch CPU (+ CUDA) generator states
  step_00000060.tmp/        a save in progress (or one interrupted by a kill): never loaded
  step_00000040.old/        the previous copy of step 40 while a re-save of step 40 replaces it
A directory counts as a checkpoint only if it holds train_state.pt (the completeness marker).
Atomicity: every rank writes into `step_N.tmp/`; once every rank reports its part written, rank 0
checks that every rank's files are there (each rng_rank{r}.pt and every shard file named in
DCP's .metadata: a rank writing elsewhere, --out not shared, fails the save on every rank instead
of leaving a "complete" checkpoint that cannot be loaded), then writes train_state.pt last,
fsyncs, and renames the directory to `step_N` (a rename within one filesystem is atomic).
Rank 0's steps broadcast their failure, so no rank is left waiting in a collective.
Re-saving an existing step (a fresh run in a used --out) first renames the old `step_N` to
`step_N.old`, which list_checkpoints accepts while `step_N` is absent, and deletes it only after
the new `step_N` is in place. Deleting a checkpoint first removes its marker, so a kill in the
middle of a deletion never leaves a half-deleted directory that looks complete. Only after the
rename are other checkpoints pruned (the `keep` newest older ones stay; newer ones, left by an
earlier run in this directory, go: they would make --resume jump onto another run) and leftovers
of interrupted saves removed. So a kill at any moment leaves the previous checkpoint (or the new
one) usable. Multi-node runs need `--out` on a filesystem shared by all nodes.
"""
from __future__ import annotations

import os
import re
import shutil

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from s1.train.ranks import agree, on_rank0

_ENTRY_RE = re.compile(r"step_(\d{8})(\.old|\.tmp)?")  # everything save_checkpoint may leave behind
_MARKER = "train_state.pt"


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


def _complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, _MARKER))


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """Complete checkpoints under `root`, oldest first, one per step: `step_N`, or `step_N.old`
    when a re-save of step N was interrupted before the new `step_N` was in place. Save
    directories (.tmp), incomplete directories and stray files are ignored."""
    if not os.path.isdir(root):
        return []
    found: dict[int, str] = {}
    for name in os.listdir(root):
        m = _ENTRY_RE.fullmatch(name)
        path = os.path.join(root, name)
        if m is None or m.group(2) == ".tmp" or not _complete(path):
            continue
        step = int(m.group(1))
        if m.group(2) is None or step not in found:  # step_N wins over step_N.old
            found[step] = path
    return sorted(found.items())


def _remove(path: str) -> None:
    """Delete a checkpoint directory so that no moment of it looks complete: the marker goes
    first (one unlink), then the rest."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        marker = os.path.join(path, _MARKER)
        if os.path.lexists(marker):
            os.unlink(marker)
            _fsync_dir(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


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
    """Collective: every rank calls it. Returns the final checkpoint directory.

    keep: how many checkpoints to keep, this one included (0: keep all). Checkpoints of later
    steps than this one (left by an earlier run in the same directory) are always removed."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    final = checkpoint_dir(root, step)
    tmp, old = final + ".tmp", final + ".old"

    def start():
        os.makedirs(root, exist_ok=True)
        if os.path.lexists(tmp):  # left over from a save that was killed
            _remove(tmp)
        os.makedirs(tmp)
    on_rank0(start, f"creating {tmp}")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
    try:
        with open(os.path.join(tmp, f"rng_rank{rank}.pt"), "wb") as f:
            torch.save(_rng_state(), f)
            f.flush()
            os.fsync(f.fileno())
        ok, why = True, ""
    except OSError as e:
        ok, why = False, f"writing rng_rank{rank}.pt into {tmp}: {e}"
    agree(ok, why, f"saving checkpoint step {step}")

    def commit():
        missing = missing_shards(tmp, world)
        if missing:
            raise RuntimeError(f"checkpoint {tmp}: files of other ranks are missing ({', '.join(missing[:8])}"
                               f"{', ...' if len(missing) > 8 else ''}): --out must be on storage shared by "
                               "every rank; the checkpoint was not marked complete")
        # train_state.pt is written last: its presence marks the directory complete.
        with open(os.path.join(tmp, _MARKER), "wb") as f:
            torch.save(train_state, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        # Re-saving a step: at every moment either a complete step_N or a complete step_N.old
        # exists (list_checkpoints falls back to .old), so a kill never loses step N.
        if os.path.lexists(final):
            if _complete(final):
                if os.path.lexists(old):  # a stale copy (a kill during its deletion): step_N is whole
                    _remove(old)
                os.rename(final, old)
            else:  # an incomplete leftover (never loadable); a complete .old, if any, stays the fallback
                _remove(final)
            _fsync_dir(root)
        os.rename(tmp, final)
        _fsync_dir(root)
        _prune(root, step, final, keep)
    on_rank0(commit, f"committing checkpoint step {step}")
    return final


def missing_shards(path: str, world: int) -> list[str]:
    """Files a complete save of `world` ranks must have put into `path` and that are not there."""
    names = [".metadata"] + [f"rng_rank{r}.pt" for r in range(world)]
    missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    if ".metadata" not in missing:
        try:
            md = FileSystemReader(path).read_metadata()
            files = {getattr(v, "relative_path", None) for v in (md.storage_data or {}).values()}
            missing += sorted(f for f in files if f and not os.path.isfile(os.path.join(path, f)))
        except Exception as e:  # noqa: BLE001 - unreadable metadata: not complete
            missing.append(f".metadata (unreadable: {e})")
    return missing


def _prune(root: str, step: int, final: str, keep: int) -> None:
    """Rank 0, once `final` is in place: drop older checkpoints beyond `keep`, every checkpoint
    of a later step (an earlier run's: it would hijack --resume), and any other leftovers
    (.tmp / shadowed .old / incomplete directories of interrupted saves and deletions)."""
    older = [p for s, p in list_checkpoints(root) if s < step]
    kept = {final}
    if keep != 1:
        kept.update(older if keep <= 0 else older[len(older) - min(len(older), keep - 1):])
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if _ENTRY_RE.fullmatch(name) and path not in kept:
            try:
                _remove(path)
            except OSError:  # best effort: never fail a completed save over a cleanup
                pass
    _fsync_dir(root)


def load_checkpoint(path: str, model, optimizer) -> dict:
    """Collective: restore model + optimizer shards (resharding if the world size changed), this
    rank's RNG state (when saved with the same world size) and return train_state."""
    if not _complete(path):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {_MARKER})")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train_state = torch.load(os.path.join(path, _MARKER), weights_only=False)
    rng_file = os.path.join(path, f"rng_rank{rank}.pt")
    if train_state.get("world_size") == world and os.path.exists(rng_file):
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return train_state


def export_hf(model, cfg, path: str, tokenizer=None, dtype: torch.dtype | None = None,
              max_shard_size="5GB") -> None:
    """Collective: write an HF checkpoint directory loadable by transformers and
    s1.model.loading.load_model, plus the tokenizer files. Streams: the parameters are gathered
    one at a time and rank 0 writes each in place (s1/train/weights.py), never holding the model."""
    from s1.train.weights import export_streaming
    if cfg.max_window_layers is None:
        # transformers 5 rejects a null max_window_layers (a from-scratch config may lack it); it is
        # inert without sliding windows, so write HF's meaning of "all layers full attention".
        from s1.model.config import Qwen2Config
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "max_window_layers": cfg.num_hidden_layers})
    tok_dir = getattr(tokenizer, "path", None)
    export_streaming(model, cfg, path, dtype=dtype, max_shard_size=max_shard_size, tokenizer_dir=tok_dir)

    def finish():
        if tokenizer is not None and tok_dir is None:
            tokenizer.save_pretrained(path)
        _usual_modes(path)
    on_rank0(finish, f"exporting to {path}")


def _usual_modes(path: str) -> None:
    """Exported files get the mode an ordinary open() gives (0644 under the default umask 022):
    safetensors writes its files 0600."""
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isfile(p) and not os.path.islink(p):
            os.chmod(p, 0o666 & ~mask)
