"""Weights in and out of an FSDP2 model without a rank-0 bottleneck.

`load_sharded(model, path)`: every rank reads, from the HF safetensors files, only the dim-0 rows
of each tensor that its FSDP shard holds (s1.model.loading's reader: one read per tensor range,
straight into the shard), so no host ever holds the full model and no rank waits while another
loads the whole checkpoint.
`export_streaming(model, cfg, path, dtype)`: parameters are gathered one at a time (all ranks,
in a fixed order) and rank 0 writes each into its place in the safetensors file(s), whose header
is known from the shapes in advance: rank 0 holds one tensor at a time, never the full model.
"""
from __future__ import annotations

import json
import os

import torch

from s1.model.config import Qwen2Config
from s1.model.loading import (INDEX_FILE, SINGLE_FILE, TOKENIZER_FILES, CheckpointError, _checkpoint_files,
                              _parse_size, _SafetensorsFile, hf_name_map)

_WRAP = "_checkpoint_wrapped_module."
_ST_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def _params(model) -> dict:
    return {n.replace(_WRAP, ""): p for n, p in model.named_parameters()}


def _local_rows(p) -> tuple[torch.Tensor, int, int]:
    """(the local tensor, first global row, rows) of a dim-0 sharded DTensor or a plain tensor."""
    if hasattr(p, "to_local"):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
        shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        local = p.to_local()
        return local, (offset[0] if len(offset) else 0), (shape[0] if len(shape) else 0)
    return p.data, 0, p.shape[0] if p.dim() else 0


def load_sharded(model, path: str, cfg: Qwen2Config) -> dict:
    """Fill the (materialized, sharded) parameters of `model` from the HF checkpoint in `path`.
    Returns {"bytes_read": ...} of this rank."""
    files = _checkpoint_files(path)
    name_map = hf_name_map(cfg)
    missing = [n for n in name_map if n not in files]
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {', '.join(missing[:5])}")
    params = _params(model)
    by_file: dict[str, list[str]] = {}
    for hf in name_map:
        by_file.setdefault(files[hf], []).append(hf)
    read = 0
    with torch.no_grad():
        for fname, names in by_file.items():
            with _SafetensorsFile(fname) as f:
                for hf in names:
                    p = params[name_map[hf]]
                    if tuple(f.shape(hf)) != tuple(p.shape):
                        raise CheckpointError(f"{os.path.basename(fname)}: tensor {hf} has shape {f.shape(hf)}, "
                                              f"the model {tuple(p.shape)}")
                    local, start, rows = _local_rows(p)
                    if rows == 0 or local.numel() == 0:
                        continue
                    part = None if p.dim() == 0 else (0, start, start + rows)
                    f.read_into(hf, local, part)
                read += f.bytes_read
    return {"bytes_read": read}


def _plan_files(entries: list[tuple[str, tuple, torch.dtype]], limit: int) -> list[list[int]]:
    shards, cur, size = [], [], 0
    for i, (_, shape, dt) in enumerate(entries):
        n = dt.itemsize
        for d in shape:
            n *= d
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    shards.append(cur)
    return shards


def _header(entries, idx) -> tuple[bytes, list[int]]:
    head, offs, pos = {"__metadata__": {"format": "pt"}}, [], 0
    for i in idx:
        name, shape, dt = entries[i]
        n = dt.itemsize
        for d in shape:
            n *= d
        head[name] = {"dtype": _ST_NAMES[dt], "shape": list(shape), "data_offsets": [pos, pos + n]}
        offs.append(pos)
        pos += n
    raw = json.dumps(head, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, offs


def export_streaming(model, cfg: Qwen2Config, path: str, dtype: torch.dtype | None = None,
                     max_shard_size="5GB", tokenizer_dir: str | None = None) -> None:
    """Collective. Writes config.json, model.safetensors (or HF-named shards + index) and the
    tokenizer files; rank 0's write errors are reported to every rank after the last gather."""
    import torch.distributed as dist

    from s1.train.ranks import agree_on
    rank = dist.get_rank() if dist.is_initialized() else 0
    params = _params(model)
    names = list(hf_name_map(cfg))
    entries = [(n, tuple(params[n].shape), dtype or params[n].dtype) for n in names]
    groups = _plan_files(entries, _parse_size(max_shard_size))
    fnames = ([SINGLE_FILE] if len(groups) == 1 else
              [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
    err = None
    if rank == 0:
        try:
            os.makedirs(path, exist_ok=True)
            for old in os.listdir(path):  # stale shards of an earlier export would confuse loaders
                if old.endswith(".safetensors") or old == INDEX_FILE:
                    os.remove(os.path.join(path, old))
        except OSError as e:
            err = e
    for g, fname in zip(groups, fnames):
        fh, tmp = None, os.path.join(path, fname + ".tmp")
        if rank == 0 and err is None:
            try:
                header, _ = _header(entries, g)
                fh = open(tmp, "wb")
                fh.write(header)
            except OSError as e:
                err = e
        for i in g:
            p = params[entries[i][0]]
            with torch.no_grad():
                full = p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
            if rank == 0 and fh is not None and err is None:
                try:
                    t = full.to(entries[i][2]).to("cpu").contiguous()
                    fh.write(t.reshape(-1).view(torch.uint8).numpy().data)
                except OSError as e:
                    err = e
            del full
        if fh is not None:
            try:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
                if err is None:
                    os.replace(tmp, os.path.join(path, fname))
            except OSError as e:
                err = e
    if rank == 0 and err is None:
        try:
            if len(groups) > 1:
                wm = {entries[i][0]: fname for g, fname in zip(groups, fnames) for i in g}
                total = sum(dt.itemsize * int(torch.Size(shape).numel()) for _, shape, dt in entries)
                with open(os.path.join(path, INDEX_FILE), "w") as fh:
                    json.dump({"metadata": {"total_size": total}, "weight_map": wm}, fh, indent=2)
            out_cfg = cfg if dtype is None else Qwen2Config.from_dict(
                {**cfg.to_dict(), "torch_dtype": str(dtype).removeprefix("torch.")})
            out_cfg.save_pretrained(path)
            if tokenizer_dir is not None:
                import shutil
                for fn in TOKENIZER_FILES:
                    src = os.path.join(tokenizer_dir, fn)
                    if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(path, fn)):
                        shutil.copy(src, os.path.join(path, fn))
        except OSError as e:
            err = e
    agree_on(err, f"exporting to {path}")
