"""Fused Gumbel-max sampling in Triton: read the logits once, return the samples.

Same contract as kernels/reference.py::gumbel_argmax (the oracle):
    score[b, v] = logits[b, v] * inv_temperature[b] + g(b, v),   g = -log(-log u(seed[b], pos[b], v))
(greedy rows, inv_temperature <= 0: score = logits), NaN scores count as +inf, only ids < min(V,
vocab_size) compete; t_u = argmax score, t_m = argmax over ids not in mask_ids; ties -> lowest id.
u is infer/budget.py's counter-based noise, bit for bit: the lowbias32 hash chain in uint32
registers (multiplies wrap mod 2^32, shifts on uint32 are logical), then ((x >> 9) + 0.5) * 2^-23
in fp32. The [B, V] noise is never materialized.

Two stages (deterministic, no atomics):
  1. grid (B, S): program (b, c) walks chunk c of row b in BLOCK_V tiles, keeping per-lane running
     (max, id) pairs for t_u and t_m (strict `>` in increasing id order keeps the lowest id of a
     tie), reduces them across lanes once at the end and writes one partial per pair.
  2. grid (B,): reduces the S partials of a row (max, then the lowest id holding it).
  S is chosen so that B * S fills the GPU (~8 programs per SM): at B = 256 on a 132-SM H100, S = 5
  (1280 programs of ~30K ids); at B = 1, one program per tile. A single program per row would
  leave most SMs idle for small batches and run 256 programs on 132 SMs at B = 256.

Numerics on GPU: log is libdevice's __nv_logf (what torch's CUDA log calls), not tl.log, whose
fp32 lowering may be an approximation: -log(u) for u near 1 is exactly where the race is won.
fp-contraction is off (enable_fp_fusion=False) so `x * s + g` rounds twice, as in torch. So the
kernel should match the torch reference on CUDA bit for bit; in the interpreter logs are numpy's
(can differ from torch's CPU log by an ulp: only an exact near-tie could flip a sample).
The hash wraps uint32 products on purpose, so the launch sets sanitize_overflow=False (under
TRITON_DEBUG=1 Triton would otherwise assert "overflow detected" on every multiply). The
interpreter always runs its overflow check, but its assert is a no-op there; it only costs time.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from kernels.triton_utils import check_device, interpreting

MAX_MASK_IDS = 16          # mask ids are unrolled in the kernel (the engine passes 3)
_NO_ID = 2 ** 31 - 1       # "no candidate seen" id in the running pairs and partials

# Interpreter / test knobs (None: defaults). On GPU the config comes from `_config`.
INTERPRET_BLOCK_V = None   # default min(1024, next_pow2(n))
INTERPRET_CHUNKS = None    # default 1


@triton.jit
def _lowbias32(x):
    # lowbias32 (C. Wellons) on uint32: products wrap mod 2^32, >> is logical
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _log(x, ACCURATE: tl.constexpr):
    if ACCURATE:
        y = libdevice.log(x)   # __nv_logf, as torch.log on CUDA
    else:
        y = tl.log(x)          # interpreter: numpy (libdevice is unavailable there)
    return y


@triton.jit
def _gumbel_partial_kernel(logits_ptr, inv_t_ptr, seed_ptr, pos_ptr, mask_ptr, part_val_ptr, part_idx_ptr,
                           B, n_valid, stride_b, n_chunks, tiles_per_chunk,
                           NUM_MASK: tl.constexpr, BLOCK_V: tl.constexpr, ACCURATE_LOG: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    NO_ID: tl.constexpr = 2147483647
    offs = tl.arange(0, BLOCK_V)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_b

    inv_t = tl.load(inv_t_ptr + row)
    sampled = inv_t > 0.0
    # per-row key from all 64 bits of the seed and the low 32 bits of pos (reference._row_key)
    seed = tl.load(seed_ptr + row)
    pos = tl.load(pos_ptr + row)
    seed_lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    seed_hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    pos_lo = (pos & 0xFFFFFFFF).to(tl.uint32)
    key = _lowbias32(_lowbias32(seed_lo) ^ _lowbias32(pos_lo + 0x632BE5AB))
    key = _lowbias32(key ^ _lowbias32(seed_hi + 0x9E3779B9))

    acc_u = tl.full([BLOCK_V], float("-inf"), tl.float32)
    idx_u = tl.full([BLOCK_V], NO_ID, tl.int32)
    acc_m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    idx_m = tl.full([BLOCK_V], NO_ID, tl.int32)
    first_tile = chunk * tiles_per_chunk
    for t in range(0, tiles_per_chunk):
        ids = (first_tile + t) * BLOCK_V + offs
        valid = ids < n_valid
        x = tl.load(row_ptr + ids, mask=valid, other=0.0).to(tl.float32)
        if sampled:
            h = _lowbias32(ids.to(tl.uint32) * 0x9E3779B1 + 0x7F4A7C15)
            h = _lowbias32(h ^ key)
            u = ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07   # 2^-23: u < 1 exactly
            g = -_log(-_log(u, ACCURATE_LOG), ACCURATE_LOG)
            s = x * inv_t + g
        else:
            s = x
        s = tl.where(s != s, float("inf"), s)       # NaN counts as +inf (reference does the same)
        keep = valid
        for j in tl.static_range(NUM_MASK):
            mid = tl.load(mask_ptr + j)
            mid32 = tl.where((mid >= 0) & (mid < n_valid), mid, -1).to(tl.int32)
            keep = keep & (ids != mid32)
        # the first candidate a lane sees is taken even at -inf, so a tie at -inf has an id
        up_u = valid & ((s > acc_u) | (idx_u == NO_ID))
        acc_u = tl.where(up_u, s, acc_u)
        idx_u = tl.where(up_u, ids, idx_u)
        up_m = keep & ((s > acc_m) | (idx_m == NO_ID))
        acc_m = tl.where(up_m, s, acc_m)
        idx_m = tl.where(up_m, ids, idx_m)

    best_u = tl.max(acc_u, 0)
    arg_u = tl.min(tl.where(acc_u == best_u, idx_u, NO_ID), 0)
    best_m = tl.max(acc_m, 0)
    arg_m = tl.min(tl.where(acc_m == best_m, idx_m, NO_ID), 0)
    out = row * n_chunks + chunk
    tl.store(part_val_ptr + out, best_u)
    tl.store(part_idx_ptr + out, arg_u)
    tl.store(part_val_ptr + B * n_chunks + out, best_m)
    tl.store(part_idx_ptr + B * n_chunks + out, arg_m)


@triton.jit
def _gumbel_final_kernel(part_val_ptr, part_idx_ptr, out_ptr, B, n_chunks, BLOCK_S: tl.constexpr):
    row = tl.program_id(0)
    NO_ID: tl.constexpr = 2147483647
    offs = tl.arange(0, BLOCK_S)
    cmask = offs < n_chunks
    base = row * n_chunks
    v = tl.load(part_val_ptr + base + offs, mask=cmask, other=float("-inf"))
    i = tl.load(part_idx_ptr + base + offs, mask=cmask, other=NO_ID)
    t_u = tl.min(tl.where(v == tl.max(v, 0), i, NO_ID), 0)
    v = tl.load(part_val_ptr + B * n_chunks + base + offs, mask=cmask, other=float("-inf"))
    i = tl.load(part_idx_ptr + B * n_chunks + base + offs, mask=cmask, other=NO_ID)
    t_m = tl.min(tl.where(v == tl.max(v, 0), i, NO_ID), 0)
    t_m = tl.where(t_m == NO_ID, t_u, t_m)            # every candidate id masked: no constraint
    tl.store(out_ptr + row, t_u.to(tl.int64))
    tl.store(out_ptr + B + row, t_m.to(tl.int64))


@functools.lru_cache(maxsize=None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _config(B: int, n: int, device, block_v: int | None, num_chunks: int | None):
    """(BLOCK_V, S, tiles_per_chunk, num_warps)."""
    if interpreting():
        block_v = block_v or INTERPRET_BLOCK_V or min(1024, triton.next_power_of_2(n))
        num_chunks = num_chunks or INTERPRET_CHUNKS or 1
        warps = 1
    else:
        block_v = block_v or 1024                  # 8 fp32 per thread at 4 warps: two 16-byte loads
        warps = 4 if block_v <= 1024 else 8
        if num_chunks is None:                     # ~8 programs per SM in all
            num_chunks = triton.cdiv(8 * _num_sms(device.index if device.index is not None else
                                                  torch.cuda.current_device()), B)
    if block_v & (block_v - 1):
        raise ValueError(f"gumbel_argmax: block_v={block_v} is not a power of 2")
    tiles = triton.cdiv(n, block_v)
    s = max(1, min(int(num_chunks), tiles))
    tiles_per_chunk = triton.cdiv(tiles, s)
    return block_v, triton.cdiv(tiles, tiles_per_chunk), tiles_per_chunk, warps


def gumbel_argmax(logits: torch.Tensor, inv_temperature: torch.Tensor, seed: torch.Tensor,
                  pos: torch.Tensor, vocab_size: int, mask_ids: torch.Tensor, *,
                  block_v: int | None = None, num_chunks: int | None = None):
    """(t_u, t_m) int64 [B]: see the module docstring and kernels/reference.py::gumbel_argmax.
    block_v / num_chunks override the tiling (tests)."""
    if logits.dim() != 2:
        raise ValueError(f"gumbel_argmax: logits must be [B, V], got {tuple(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"gumbel_argmax: logits dtype {logits.dtype} (expected fp32, fp16 or bf16)")
    B, V = logits.shape
    n = min(V, int(vocab_size))
    if n < 1:
        raise ValueError(f"gumbel_argmax: no candidate ids (V={V}, vocab_size={vocab_size})")
    if n >= 2 ** 31 - 1:
        raise ValueError(f"gumbel_argmax: vocabulary of {n} ids does not fit the int32 ids")
    for name, t in (("inv_temperature", inv_temperature), ("seed", seed), ("pos", pos)):
        if tuple(t.shape) != (B,):
            raise ValueError(f"gumbel_argmax: {name} must be [{B}], got {tuple(t.shape)}")
    dev = logits.device
    mask_ids = torch.as_tensor(mask_ids, dtype=torch.int64, device=dev).reshape(-1)
    if mask_ids.numel() > MAX_MASK_IDS:
        raise ValueError(f"gumbel_argmax: {mask_ids.numel()} mask ids > {MAX_MASK_IDS}")
    if seed.is_floating_point() or pos.is_floating_point():
        raise ValueError("gumbel_argmax: seed and pos must be integer tensors")
    check_device("gumbel_argmax", logits, inv_temperature, seed, pos, mask_ids)
    if V > 1 and logits.stride(1) != 1:
        logits = logits.contiguous()                 # rows may be strided; the vocab dim may not
    inv_t = inv_temperature.to(torch.float32).contiguous()
    seed = seed.to(torch.int64).contiguous()
    pos = pos.to(torch.int64).contiguous()
    if mask_ids.numel() == 0:
        mask_ids = torch.full((1,), -1, dtype=torch.int64, device=dev)   # never read (NUM_MASK = 0)
        num_mask = 0
    else:
        mask_ids = mask_ids.contiguous()
        num_mask = mask_ids.numel()
    out = torch.empty((2, B), dtype=torch.int64, device=dev)
    if B == 0:
        return out[0], out[1]
    blk, S, tiles_per_chunk, warps = _config(B, n, dev, block_v, num_chunks)
    part_val = torch.empty((2, B, S), dtype=torch.float32, device=dev)
    part_idx = torch.empty((2, B, S), dtype=torch.int32, device=dev)
    _gumbel_partial_kernel[(B, S)](
        logits, inv_t, seed, pos, mask_ids, part_val, part_idx,
        B, n, logits.stride(0), S, tiles_per_chunk,
        NUM_MASK=num_mask, BLOCK_V=blk, ACCURATE_LOG=not interpreting(),
        num_warps=warps, enable_fp_fusion=False, sanitize_overflow=False)
    _gumbel_final_kernel[(B,)](part_val, part_idx, out, B, S,
                               BLOCK_S=max(2, triton.next_power_of_2(S)), num_warps=1)
    return out[0], out[1]
