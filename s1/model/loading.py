"""Hugging Face checkpoint I/O: config.json + model.safetensors (or shards with an index).

Qwen2 / Qwen2.5 (model_type "qwen2") and Qwen3 dense ("qwen3": no q/k/v biases, per-head
`self_attn.q_norm` / `k_norm` weights) checkpoints, read and written in HF's names and layout.

Loading never holds two full copies of the weights: the model is built on the meta device,
materialized once (`to_empty`) on the target device in the target dtype, then filled tensor by
tensor from memory-mapped safetensors files (one tensor in flight at a time).
Every checkpoint tensor must map to a parameter (`hf_name_map`), every parameter must be filled,
and every shape must match; anything else raises CheckpointError naming the tensor and file.
`load_model` also takes a Hugging Face Hub id in the local HF cache: `resolve_model_path`
(s1/common/hub.py, pure Python, re-exported here) is the one resolver every --model goes through.
`save_random_checkpoint` writes a checkpoint of any shape with random weights (vLLM's "dummy"
weights, as files): benchmarks and tests run the real loading path without downloading weights.

Sharded loading (tensor parallelism, applied from outside: s1/infer/tensor_parallel.py): a `shard` plan
resizes the meta model to this process's local shapes before anything is allocated and names,
per checkpoint tensor, the (dim, start, stop) range this process holds; only those bytes are read
(one read per contiguous run: a dim-0 range is one read, a dim-1 range of a matrix one per row).
"""
from __future__ import annotations

import json
import os
import re
import shutil

import torch
from safetensors.torch import save_file

from s1.common.hub import ModelNotFound, resolve_model_path  # noqa: F401  (re-exported: the one --model resolver)
from s1.model.config import Qwen2Config, shape_config
from s1.model.qwen2 import Qwen2ForCausalLM

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "chat_template.jinja", "special_tokens_map.json", "generation_config.json")


class CheckpointError(ValueError):
    pass


def hf_name_map(cfg: Qwen2Config) -> dict[str, str]:
    """HF tensor name -> our parameter name, for every tensor a checkpoint of `cfg` must have.

    Our module tree mirrors HF's, so the map is the identity on names; it is still spelled out
    from the config so that a checkpoint with a missing or extra tensor is caught by name.
    """
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj"):
            names += [p + f"self_attn.{proj}.weight"] + ([p + f"self_attn.{proj}.bias"] if cfg.attention_bias else [])
        names += [p + "self_attn.o_proj.weight"]
        if cfg.qk_norm:
            names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
        names += [p + f"mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")]
    if not cfg.tie_word_embeddings:
        names.append("lm_head.weight")
    return {n: n for n in names}


# Tensors a checkpoint may carry that we deliberately do not load.
_IGNORED = [re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")]


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}


class _SafetensorsFile:
    """Minimal safetensors reader that copies each tensor straight into its destination.

    The safetensors library reads through mmap: every page it touches stays resident, so
    loading a file costs a second copy of the weights in RSS until the file is closed. Reading
    with `readinto` into the parameter's own storage holds only the parameter (plus, when the
    dtype or device differs, one tensor in flight). Format: u64 little-endian header length, a
    JSON header {name: {dtype, shape, data_offsets: [begin, end]}}, then the data.
    """

    def __init__(self, fname: str):
        self.fname = fname
        self.size = os.path.getsize(fname)
        self.fh = open(fname, "rb", buffering=0)
        try:
            raw = self.fh.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than the 8-byte header length")
            n = int.from_bytes(raw, "little")
            if n > self.size - 8:
                raise ValueError(f"header length {n} exceeds the file size {self.size}")
            header = json.loads(self.fh.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            self.fh.close()
            raise CheckpointError(f"{fname}: corrupt or truncated safetensors file ({e})") from e
        header.pop("__metadata__", None)
        self.data_start = 8 + n
        self.header = header
        self.bytes_read = 0  # tensor data bytes read so far (not counting the header)

    def keys(self):
        return self.header.keys()

    def shape(self, name: str) -> tuple:
        return tuple(self.header[name]["shape"])

    def read_into(self, name: str, dest: torch.Tensor, part: tuple[int, int, int] | None = None) -> None:
        """Copy tensor `name` (or, with part=(dim, start, stop), its [start, stop) range along dim)
        into `dest`, whose shape must be that of the tensor or of the range; reads only those bytes."""
        info = self.header[name]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self.fname}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = list(info["shape"])
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize:
            raise CheckpointError(f"{self.fname}: tensor {name}: {end - begin} bytes for shape "
                                  f"{tuple(info['shape'])} of {info['dtype']}")
        if self.data_start + end > self.size:
            raise CheckpointError(f"{self.fname}: truncated file: tensor {name} ends at byte "
                                  f"{self.data_start + end} but the file has {self.size} bytes")
        # Byte runs to read, as (file offset, length): one for the whole tensor or a dim-0 range;
        # for a range along dim d, one per index of the dims before d (row-major layout).
        if part is None or (part[1] == 0 and part[2] == shape[part[0]]):
            runs, out_shape = [(begin, end - begin)], tuple(shape)
        else:
            dim, a, b = part
            if not (0 <= dim < len(shape) and 0 <= a <= b <= shape[dim]):
                raise CheckpointError(f"{self.fname}: tensor {name} of shape {tuple(shape)} has no range "
                                      f"[{a}, {b}) along dim {dim}")
            outer = 1
            for d in shape[:dim]:
                outer *= d
            inner = dtype.itemsize
            for d in shape[dim + 1:]:
                inner *= d
            run = (b - a) * inner
            runs = [(begin + (o * shape[dim] + a) * inner, run) for o in range(outer)]
            out_shape = tuple(shape[:dim] + [b - a] + shape[dim + 1:])
        if tuple(dest.shape) != out_shape:
            raise CheckpointError(f"{self.fname}: tensor {name}{'' if part is None else f' range {part}'} "
                                  f"has shape {out_shape}, destination {tuple(dest.shape)}")
        direct = dest.device.type == "cpu" and dest.dtype == dtype and dest.is_contiguous()
        buf = dest if direct else torch.empty(out_shape, dtype=dtype)
        view = buf.reshape(-1).view(torch.uint8).numpy() if buf.numel() else None
        pos = 0
        for off, length in runs:
            if not length:
                continue
            self.fh.seek(self.data_start + off)
            got = 0
            while got < length:
                k = self.fh.readinto(view[pos + got:pos + length])
                if not k:
                    raise CheckpointError(f"{self.fname}: truncated file while reading tensor {name}")
                got += k
            pos += length
        self.bytes_read += pos
        if not direct:
            dest.copy_(buf)

    def close(self):
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _checkpoint_files(path: str) -> dict[str, str]:
    """tensor name -> file, from the index (sharded) or the single file's header."""
    index = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, SINGLE_FILE)
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        for fname in set(weight_map.values()):
            if not os.path.exists(os.path.join(path, fname)):
                raise CheckpointError(f"{index} names shard {fname!r}, which is missing from {path}")
        return {k: os.path.join(path, v) for k, v in weight_map.items()}
    if os.path.exists(single):
        with _SafetensorsFile(single) as f:
            return {k: single for k in f.keys()}
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path}")


def load_model(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None,
               cfg: Qwen2Config | None = None, *, shard=None, stats: dict | None = None) -> Qwen2ForCausalLM:
    """Load an HF-format Qwen2 / Qwen3 checkpoint directory onto `device` in `dtype` (default: config's).

    shard: a sharding plan applied from outside (s1/infer/tensor_parallel.py's), an object with
        `prepare(model)`: replaces modules of the meta-device model by their local shapes, and
        `part(hf_name) -> (dim, start, stop) | None`: the range of each checkpoint tensor this process
        holds (None: all of it). Only those ranges are read; full shapes are still checked.
    stats: if given, a dict filled with "bytes_read" (tensor data read from disk), "tensors", "files".
    """
    path = os.fspath(path)
    if not os.path.isdir(path):  # a Hugging Face Hub id in the local HF cache (s1/common/hub.py)
        try:
            path = resolve_model_path(path, what="checkpoint")
        except ModelNotFound as e:
            raise FileNotFoundError(f"checkpoint directory {path!r} does not exist ({e})") from None
    cfg = cfg or Qwen2Config.from_pretrained(path)
    dtype = dtype or cfg.dtype
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype)  # still on meta: free
    full_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if shard is not None:
        shard.prepare(model)  # local shapes, still on meta
    model.to_empty(device=device)  # the one allocation of the weights, in the target dtype
    params = dict(model.named_parameters())
    name_map = hf_name_map(cfg)
    files = _checkpoint_files(path)

    unexpected = [n for n in files if n not in name_map and not any(r.fullmatch(n) for r in _IGNORED)
                  and not (n == "lm_head.weight" and cfg.tie_word_embeddings)]
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s) not in a {cfg.model_type} model of this config: "
                              f"{', '.join(sorted(unexpected)[:5])}" + (" ..." if len(unexpected) > 5 else ""))
    missing = [n for n in name_map if n not in files]
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {', '.join(missing[:5])}"
                              + (" ..." if len(missing) > 5 else ""))

    by_file: dict[str, list[str]] = {}
    for hf_name in name_map:
        by_file.setdefault(files[hf_name], []).append(hf_name)
    bytes_read = 0
    with torch.no_grad():
        for fname, names in by_file.items():
            with _SafetensorsFile(fname) as f:
                for hf_name in names:
                    if hf_name not in f.header:
                        raise CheckpointError(f"{fname}: the index places {hf_name} here, but the file lacks it")
                    ours = name_map[hf_name]
                    p = params[ours]
                    shape = f.shape(hf_name)
                    if shape != full_shapes[ours]:
                        raise CheckpointError(
                            f"{os.path.basename(fname)}: tensor {hf_name} has shape {shape} but the config "
                            f"(hidden_size={cfg.hidden_size}, heads={cfg.num_attention_heads}/"
                            f"{cfg.num_key_value_heads}, intermediate_size={cfg.intermediate_size}, "
                            f"vocab_size={cfg.vocab_size}) implies {full_shapes[ours]}")
                    f.read_into(hf_name, p.data, None if shard is None else shard.part(hf_name))
                bytes_read += f.bytes_read
    if stats is not None:
        stats.update(bytes_read=bytes_read, tensors=len(name_map), files=len(by_file))
    return model.eval()


def _parse_size(s) -> int:
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", str(s).upper())
    if not m:
        raise ValueError(f"cannot parse size {s!r} (expected e.g. '5GB', '500MB' or bytes)")
    return int(float(m.group(1)) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}[m.group(2)])


def save_state_dict(state_dict: dict[str, torch.Tensor], cfg: Qwen2Config, path: str | os.PathLike,
                    max_shard_size="5GB", dtype: torch.dtype | None = None,
                    tokenizer_dir: str | os.PathLike | None = None) -> None:
    """Write `state_dict` (our/HF names) as an HF checkpoint: config.json + safetensors (+ index).

    Shards are cut at `max_shard_size` bytes, in HF's naming (model-00001-of-00003.safetensors).
    Tied checkpoints do not store lm_head.weight (HF convention).
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    limit = _parse_size(max_shard_size)
    names = list(hf_name_map(cfg))
    tensors = {}
    for n in names:
        if n not in state_dict:
            raise CheckpointError(f"state dict lacks {n}")
        t = state_dict[n].detach()
        if dtype is not None:
            t = t.to(dtype)
        tensors[n] = t.to("cpu").contiguous()
    shards, cur, cur_size = [], {}, 0
    for n, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if cur and cur_size + nbytes > limit:
            shards.append(cur)
            cur, cur_size = {}, 0
        cur[n] = t
        cur_size += nbytes
    shards.append(cur)
    for old in os.listdir(path):  # stale shards from an earlier save would confuse loaders
        if old.endswith(".safetensors") or old == INDEX_FILE:
            os.remove(os.path.join(path, old))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, SINGLE_FILE), metadata={"format": "pt"})
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, fname), metadata={"format": "pt"})
            for n, t in shard.items():
                weight_map[n] = fname
                total += t.numel() * t.element_size()
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if dtype is not None:
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "torch_dtype": str(dtype).removeprefix("torch.")})
    cfg.save_pretrained(path)
    if tokenizer_dir is not None:
        for fn in TOKENIZER_FILES:
            src = os.path.join(tokenizer_dir, fn)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(path, fn)):
                shutil.copy(src, os.path.join(path, fn))


def save_model(model: Qwen2ForCausalLM, path: str | os.PathLike, max_shard_size="5GB",
               dtype: torch.dtype | None = None, tokenizer_dir: str | os.PathLike | None = None) -> None:
    sd = dict(model.named_parameters())
    cfg = model.config
    if dtype is None:
        dtype = next(model.parameters()).dtype
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "torch_dtype": str(dtype).removeprefix("torch.")})
    save_state_dict(sd, cfg, path, max_shard_size=max_shard_size, dtype=dtype, tokenizer_dir=tokenizer_dir)


def save_random_checkpoint(path: str | os.PathLike, config: Qwen2Config | str,
                           tokenizer_dir: str | os.PathLike | None = None, seed: int = 0, std: float | None = None,
                           max_shard_size="5GB", **overrides) -> str:
    """Write a checkpoint with random weights: config.json + safetensors (+ the tokenizer files of
    `tokenizer_dir`), loadable like any other (load_model, `s1 generate`, `s1 serve`, transformers).

    config: a Qwen2Config, or a shape name of s1.model.config.SHAPES ("0.5B", "7B", "smoke",
    "qwen3-0.6B", "qwen3-smoke", ...);
    `overrides` replace config fields (shape_config(name, **overrides)). The weights are the
    model's own initialization (Qwen2ForCausalLM.init_weights, HF's: normal(0, std) matrices, zero
    biases, unit norms) drawn on the CPU from `seed`, stored in the config's dtype; `std` (default
    the config's initializer_range, 0.02) is recorded as initializer_range. The model is built on
    the meta device and materialized once, so a large shape costs one copy of its weights.
    Returns the path as a string.
    """
    cfg = shape_config(config, **overrides) if isinstance(config, str) else \
        Qwen2Config.from_dict({**config.to_dict(), **overrides})
    if std is not None:
        cfg = Qwen2Config.from_dict({**cfg.to_dict(), "initializer_range": std})
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    model.to(cfg.dtype).to_empty(device="cpu")
    model.init_weights(seed=seed)
    save_model(model, path, max_shard_size=max_shard_size, tokenizer_dir=tokenizer_dir)
    return os.fspath(path)
