"""Fused Gumbel-max sampling in Triton: read the logits once, return the samples.

Same contract as s1/kernels/reference.py::gumbel_argmax (the oracle):
    score[b, v] = logits[b, v] * inv_temperature[b] + g(b, v),   g = -log(-log u(seed[b], pos[b], v))
(greedy rows, inv_temperature <= 0: score = logits), NaN scores count as +inf, only ids < min(V,
vocab_size) compete; t_u = argmax score, t_m = argmax over ids not in mask_ids; ties -> lowest id.
u is s1/infer/budget.py's counter-based noise, bit for bit: the lowbias32 hash chain in uint32
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
Tensor parallelism (the logits a vocabulary shard, `id_offset` its first global id): stage 1 runs
on the shard with global ids (noise, mask ids, partial ids), its S partials per row are reduced to
one (a few torch ops), all-gathered with the other ranks' (16 bytes per row), and the rules
kernel reduces the world's partials exactly as it reduces S chunks (`sample_partials`,
`force_from_partials`, `sample_and_force(..., id_offset=, gather=)`).

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

from s1.kernels import force_state as fs
from s1.kernels.triton_utils import check_device, interpreting

MAX_MASK_IDS = 16          # mask ids are unrolled in the kernel (the engine passes 3)
_NO_ID = 2 ** 31 - 1       # "no candidate seen" id in the running pairs and partials


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
def _gumbel_partial_kernel(logits_ptr, rows_ptr, inv_t_ptr, seed_ptr, pos_ptr, mask_ptr, part_val_ptr, part_idx_ptr,
                           B, n_valid, stride_b, stride_inv, stride_sp, n_chunks, tiles_per_chunk, id_offset,
                           HAS_ROWS: tl.constexpr, NUM_MASK: tl.constexpr, BLOCK_V: tl.constexpr,
                           ACCURATE_LOG: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    NO_ID: tl.constexpr = 2147483647
    offs = tl.arange(0, BLOCK_V)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_b
    # per-row parameters: at [row] (gumbel_argmax) or at [rows[row]] of the force-state tables
    if HAS_ROWS:
        prow = tl.load(rows_ptr + row).to(tl.int64)
    else:
        prow = row.to(tl.int64)

    inv_t = tl.load(inv_t_ptr + prow * stride_inv)
    sampled = inv_t > 0.0
    # per-row key from all 64 bits of the seed and the low 32 bits of pos (reference._row_key)
    seed = tl.load(seed_ptr + prow * stride_sp)
    pos = tl.load(pos_ptr + prow * stride_sp)
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
            h = _lowbias32((ids + id_offset).to(tl.uint32) * 0x9E3779B1 + 0x7F4A7C15)
            h = _lowbias32(h ^ key)
            u = ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07   # 2^-23: u < 1 exactly
            g = -_log(-_log(u, ACCURATE_LOG), ACCURATE_LOG)
            s = x * inv_t + g
        else:
            s = x
        s = tl.where(s != s, float("inf"), s)       # NaN counts as +inf (reference does the same)
        keep = valid
        for j in tl.static_range(NUM_MASK):
            mid = tl.load(mask_ptr + j) - id_offset          # mask ids are global ids
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
    # global ids (a vocabulary shard starts at id_offset); NO_ID stays NO_ID
    tl.store(part_idx_ptr + out, tl.where(arg_u == NO_ID, NO_ID, arg_u + id_offset))
    tl.store(part_val_ptr + B * n_chunks + out, best_m)
    tl.store(part_idx_ptr + B * n_chunks + out, tl.where(arg_m == NO_ID, NO_ID, arg_m + id_offset))


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
        block_v = block_v or min(1024, triton.next_power_of_2(n))
        num_chunks = num_chunks or 1
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
    """(t_u, t_m) int64 [B]: see the module docstring and s1/kernels/reference.py::gumbel_argmax.
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
        logits, seed, inv_t, seed, pos, mask_ids, part_val, part_idx,
        B, n, logits.stride(0), 1, 1, S, tiles_per_chunk, 0,
        HAS_ROWS=False, NUM_MASK=num_mask, BLOCK_V=blk, ACCURATE_LOG=not interpreting(),
        num_warps=warps, enable_fp_fusion=False, sanitize_overflow=False)
    _gumbel_final_kernel[(B,)](part_val, part_idx, out, B, S,
                               BLOCK_S=max(2, triton.next_power_of_2(S)), num_warps=1)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# sample_and_force: the sampler above (stage 1, per row of the force-state tables) + one program
# per row that reduces the partials and applies budget forcing (s1/kernels/force_state.py states
# the rules; s1/kernels/reference.py::sample_and_force is the specification, column for column).
# ---------------------------------------------------------------------------------------------
_PHASE = tl.constexpr(fs.PHASE)
_THINK_USED = tl.constexpr(fs.THINK_USED)
_WAITS_LEFT = tl.constexpr(fs.WAITS_LEFT)
_WAITS_USED = tl.constexpr(fs.WAITS_USED)
_FORCE_KIND = tl.constexpr(fs.FORCE_KIND)
_FORCE_POS = tl.constexpr(fs.FORCE_POS)
_ANSWER_USED = tl.constexpr(fs.ANSWER_USED)
_OUT_COUNT = tl.constexpr(fs.OUT_COUNT)
_FINISH = tl.constexpr(fs.FINISH)
_LAST_TOKEN = tl.constexpr(fs.LAST_TOKEN)
_MASK_NEXT = tl.constexpr(fs.MASK_NEXT)
_MAX_THINK = tl.constexpr(fs.MAX_THINK)
_MIN_THINK = tl.constexpr(fs.MIN_THINK)
_MAX_ANSWER = tl.constexpr(fs.MAX_ANSWER)
_MAX_TOKENS = tl.constexpr(fs.MAX_TOKENS)
_END_SKIP_NL = tl.constexpr(fs.END_SKIP_NL)
_FORCE_LEN = tl.constexpr(fs.FORCE_LEN)
_THINK = tl.constexpr(fs.THINK)
_FORCE = tl.constexpr(fs.FORCE)
_ANSWER = tl.constexpr(fs.ANSWER)
_DONE = tl.constexpr(fs.DONE)
_F_EXT = tl.constexpr(fs.F_EXT)
_F_END = tl.constexpr(fs.F_END)
_F_DELIM = tl.constexpr(fs.F_DELIM)
_FIN_STOP = tl.constexpr(fs.FIN_STOP)
_FIN_ANSWER_LEN = tl.constexpr(fs.FIN_ANSWER_LEN)
_FIN_MAX_TOKENS = tl.constexpr(fs.FIN_MAX_TOKENS)


@triton.jit
def _force_kernel(part_val_ptr, part_idx_ptr, given_ptr, rows_ptr, st_ptr, forced_ptr, stop_ptr, end_ptr,
                  nl_ptr, out_ptr, B, n_parts, pad_id, stride_st, stride_fr, stride_fk, stride_stop,
                  GIVEN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, NUM_END: tl.constexpr,
                  NSTOP: tl.constexpr, LMAX: tl.constexpr):
    # BLOCK_B batch rows per program, every rule as a vector op over them (the torch reference's
    # formulas, term for term)
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    bm = b < B
    NO_ID: tl.constexpr = 2147483647
    # ---- the rows' two candidates: t_u (sampled) and t_m (sampled with the end ids masked)
    if GIVEN:
        t_u = tl.load(given_ptr + b, mask=bm, other=0)
        t_m = tl.load(given_ptr + B + b, mask=bm, other=0)
    else:
        offs = tl.arange(0, BLOCK_S)
        pm = bm[:, None] & (offs[None, :] < n_parts)
        at = b[:, None] * n_parts + offs[None, :]
        v = tl.load(part_val_ptr + at, mask=pm, other=float("-inf"))
        i = tl.load(part_idx_ptr + at, mask=pm, other=NO_ID)
        t_u32 = tl.min(tl.where(v == tl.max(v, 1)[:, None], i, NO_ID), 1)
        v = tl.load(part_val_ptr + B * n_parts + at, mask=pm, other=float("-inf"))
        i = tl.load(part_idx_ptr + B * n_parts + at, mask=pm, other=NO_ID)
        t_m32 = tl.min(tl.where(v == tl.max(v, 1)[:, None], i, NO_ID), 1)
        t_m32 = tl.where(t_m32 == NO_ID, t_u32, t_m32)
        t_u = t_u32.to(tl.int64)
        t_m = t_m32.to(tl.int64)

    # ---- the rows' state
    r = tl.load(rows_ptr + b, mask=bm, other=0).to(tl.int64)
    st = st_ptr + r * stride_st
    fr = forced_ptr + r * stride_fr
    ph = tl.load(st + _PHASE, mask=bm, other=_DONE)
    tu = tl.load(st + _THINK_USED, mask=bm, other=0)
    wl = tl.load(st + _WAITS_LEFT, mask=bm, other=0)
    wu = tl.load(st + _WAITS_USED, mask=bm, other=0)
    kind = tl.load(st + _FORCE_KIND, mask=bm, other=0)
    fpos = tl.load(st + _FORCE_POS, mask=bm, other=0)
    au = tl.load(st + _ANSWER_USED, mask=bm, other=0)
    oc = tl.load(st + _OUT_COUNT, mask=bm, other=0)
    fin = tl.load(st + _FINISH, mask=bm, other=0)
    last = tl.load(st + _LAST_TOKEN, mask=bm, other=0)
    mnext = tl.load(st + _MASK_NEXT, mask=bm, other=0)
    ext_len = tl.load(st + _FORCE_LEN + _F_EXT, mask=bm, other=0)
    delim_len = tl.load(st + _FORCE_LEN + _F_DELIM, mask=bm, other=1)

    # ---- THINK: sample, or an end attempt -> extension / natural end
    thinking = ph == _THINK
    masked = (tu < tl.load(st + _MIN_THINK, mask=bm, other=0)) | (mnext != 0)
    cand = tl.where(masked, t_m, t_u)
    is_end = cand < 0
    keep = cand < 0
    pair = cand < 0
    for j in tl.static_range(NUM_END):                  # end_rules [3, NUM_END]: id, predecessor, keep
        r_prev = tl.load(end_ptr + NUM_END + j)
        hit = (cand == tl.load(end_ptr + j)) & ((r_prev < 0) | (last == r_prev))
        is_end = is_end | hit
        keep = keep | (hit & (tl.load(end_ptr + 2 * NUM_END + j) != 0))
        pair = pair | (hit & (r_prev >= 0))
    pair = pair & (keep == 0)
    drop = keep == 0
    attempt = thinking & is_end
    wait = attempt & (wl > 0)
    wait_text = wait & (ext_len > 0)
    wait_empty = wait & (ext_len == 0)
    to_answer = attempt & (wl == 0)
    off = tl.where(pair, 1, 0).to(tl.int64)             # a two-token end: F_DELIM[0] is already out
    tok = tl.where(wait_text & drop, tl.load(fr + _F_EXT * stride_fk, mask=bm, other=0), cand)
    tok = tl.where(wait_empty & drop, t_m, tok)
    delim_tok = tl.load(fr + _F_DELIM * stride_fk + tl.minimum(off, LMAX - 1), mask=bm, other=0)
    tok = tl.where(to_answer & drop, delim_tok, tok)
    wl = tl.where(wait, wl - 1, wl)
    wu = tl.where(wait, wu + 1, wu)
    tu = tl.where(thinking & ((to_answer & drop) == 0), tu + 1, tu)
    tu = tl.where(to_answer & pair, tu - 1, tu)
    ext_force = wait_text & (keep | (ext_len > 1))
    delim_force = to_answer & (keep | (delim_len > off + 1))
    mnext = tl.where(thinking, tl.where((wait_text & drop & (ext_force == 0)) | (wait_empty & keep), 1, 0), mnext)
    new_ph = tl.where(ext_force | delim_force, _FORCE, ph)
    new_ph = tl.where(to_answer & (delim_force == 0), _ANSWER, new_ph)
    kind = tl.where(ext_force, _F_EXT, tl.where(delim_force, _F_DELIM, kind))
    fpos = tl.where(ext_force | delim_force, tl.where(keep, 0, off + 1), fpos)

    # ---- FORCE: the next forced token
    forcing = ph == _FORCE
    kc = tl.minimum(tl.maximum(kind, 0), 2)
    ftok = tl.load(fr + kc * stride_fk + tl.minimum(tl.maximum(fpos, 0), LMAX - 1), mask=bm, other=0)
    tok = tl.where(forcing, ftok, tok)
    tu = tl.where(forcing & (kind == _F_EXT), tu + 1, tu)
    fdone = forcing & (fpos + 1 >= tl.load(st + _FORCE_LEN + kc, mask=bm, other=0))
    ext_done = fdone & (kind == _F_EXT)
    new_ph = tl.where(ext_done, _THINK, tl.where(fdone, _ANSWER, new_ph))
    mnext = tl.where(ext_done, 1, mnext)
    fpos = tl.where(forcing, fpos + 1, fpos)

    # ---- ANSWER: sample; a stop id ends the request
    answering = ph == _ANSWER
    tok = tl.where(answering, t_u, tok)
    hit = t_u < 0
    for j in tl.static_range(NSTOP):
        hit = hit | (t_u == tl.load(stop_ptr + r * stride_stop + j, mask=bm, other=-1))
    stop_hit = answering & hit
    au = tl.where(answering, au + 1, au)
    new_ph = tl.where(stop_hit, _DONE, new_ph)
    fin = tl.where(stop_hit, _FIN_STOP, fin)

    done_before = ph == _DONE
    tok = tl.where(done_before, pad_id, tok)
    oc = tl.where(done_before, oc, oc + 1)
    last = tl.where(done_before, last, tok)

    # ---- limits reached
    cap = ((new_ph == _THINK) | ((new_ph == _FORCE) & (kind == _F_EXT))) & \
        (tu >= tl.load(st + _MAX_THINK, mask=bm, other=0))
    nl = tl.load(nl_ptr + last, mask=bm, other=0).to(tl.int64)
    skip = tl.where((tl.load(st + _END_SKIP_NL, mask=bm, other=0) != 0) & (nl != 0), 1, 0).to(tl.int64)
    new_ph = tl.where(cap, _FORCE, new_ph)
    kind = tl.where(cap, _F_END, kind)
    fpos = tl.where(cap, skip, fpos)
    new_ph = tl.where(cap & (fpos >= tl.load(st + _FORCE_LEN + _F_END, mask=bm, other=0)), _ANSWER, new_ph)
    ans_done = (new_ph == _ANSWER) & (au >= tl.load(st + _MAX_ANSWER, mask=bm, other=0))
    fin = tl.where(ans_done, _FIN_ANSWER_LEN, fin)
    new_ph = tl.where(ans_done, _DONE, new_ph)
    tok_done = (new_ph != _DONE) & (oc >= tl.load(st + _MAX_TOKENS, mask=bm, other=0))
    fin = tl.where(tok_done, _FIN_MAX_TOKENS, fin)
    new_ph = tl.where(tok_done, _DONE, new_ph)

    tl.store(st + _PHASE, new_ph, mask=bm)
    tl.store(st + _THINK_USED, tu, mask=bm)
    tl.store(st + _WAITS_LEFT, wl, mask=bm)
    tl.store(st + _WAITS_USED, wu, mask=bm)
    tl.store(st + _FORCE_KIND, kind, mask=bm)
    tl.store(st + _FORCE_POS, fpos, mask=bm)
    tl.store(st + _ANSWER_USED, au, mask=bm)
    tl.store(st + _OUT_COUNT, oc, mask=bm)
    tl.store(st + _FINISH, fin, mask=bm)
    tl.store(st + _LAST_TOKEN, last, mask=bm)
    tl.store(st + _MASK_NEXT, mnext, mask=bm)
    tl.store(out_ptr + 0 * B + b, tok, mask=bm)
    tl.store(out_ptr + 1 * B + b, tl.where(done_before, 0, 1).to(tl.int64), mask=bm)
    tl.store(out_ptr + 2 * B + b, tl.where(new_ph == _DONE, 1, 0).to(tl.int64), mask=bm)
    tl.store(out_ptr + 3 * B + b, fin, mask=bm)
    tl.store(out_ptr + 4 * B + b, tu, mask=bm)
    tl.store(out_ptr + 5 * B + b, wu, mask=bm)
    tl.store(out_ptr + 6 * B + b, new_ph, mask=bm)


def _check_tables(tables: fs.ForceTables, *tensors) -> None:
    st, fp, forced, stop, think_end, newline = tables[:6]
    if st.dtype != torch.int64 or st.dim() != 2 or st.shape[1] != fs.NUM_COLS or not st.is_contiguous():
        raise ValueError(f"sample_and_force: state must be contiguous int64 [R, {fs.NUM_COLS}], "
                         f"got {st.dtype} {tuple(st.shape)}")
    if forced.dim() != 3 or forced.shape[1] != 3 or forced.stride(2) != 1:
        raise ValueError(f"sample_and_force: forced must be [R, 3, L] with contiguous rows, got {tuple(forced.shape)}")
    if stop.stride(1) != 1 or fp.stride(1) != 1:
        raise ValueError("sample_and_force: stop and fparams need contiguous rows")
    if think_end.numel() > MAX_MASK_IDS:
        raise ValueError(f"sample_and_force: {think_end.numel()} end ids > {MAX_MASK_IDS}")
    rules = tables.end_rules
    if rules is not None and (rules.dim() != 2 or rules.shape[0] != 3 or rules.shape[1] > MAX_MASK_IDS):
        raise ValueError(f"sample_and_force: end_rules must be [3, M <= {MAX_MASK_IDS}], got {tuple(rules.shape)}")
    check_device("sample_and_force", *(t for t in (*tensors, st, fp, forced, stop, think_end, newline, rules)
                                        if t is not None))


def _check_logits(logits: torch.Tensor, B: int) -> torch.Tensor:
    if logits.dim() != 2 or logits.shape[0] != B:
        raise ValueError(f"sample_and_force: logits {tuple(logits.shape)} for {B} rows")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"sample_and_force: logits dtype {logits.dtype} (expected fp32, fp16 or bf16)")
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        logits = logits.contiguous()
    return logits


def _stage1(logits, rows, tables: fs.ForceTables, n: int, id_offset: int, block_v, num_chunks):
    """The sampling pass over the (shard's) logits: part_val, part_idx [2, B, S] (global ids)."""
    st, fp, _, _, think_end, _ = tables[:6]
    B, dev = rows.shape[0], st.device
    blk, S, tiles_per_chunk, warps = _config(B, n, dev, block_v, num_chunks)
    part_val = torch.empty((2, B, S), dtype=torch.float32, device=dev)
    part_idx = torch.empty((2, B, S), dtype=torch.int32, device=dev)
    _gumbel_partial_kernel[(B, S)](
        logits, rows, fp[:, fs.INV_TEMP], st[:, fs.SEED], st[:, fs.OUT_COUNT], think_end, part_val, part_idx,
        B, n, logits.stride(0), fp.stride(0), st.stride(0), S, tiles_per_chunk, id_offset,
        HAS_ROWS=True, NUM_MASK=think_end.numel(), BLOCK_V=blk, ACCURATE_LOG=not interpreting(),
        num_warps=warps, enable_fp_fusion=False, sanitize_overflow=False)
    return part_val, part_idx


def sample_partials(logits: torch.Tensor, rows: torch.Tensor, tables: fs.ForceTables, vocab_size: int,
                    id_offset: int = 0, *, block_v: int | None = None,
                    num_chunks: int | None = None) -> torch.Tensor:
    """Stage 1 on a vocabulary shard (logits [B, V_local] of the global ids from id_offset): the
    sampling kernel with that id offset (noise hashed from, mask and partial ids as, global ids),
    its S partials per row reduced to one: packed int32 [2, 2, B] exactly as
    s1/kernels/reference.py::sample_partials (see reference.pack_partials). No host sync."""
    _check_tables(tables, logits, rows)
    B = rows.shape[0]
    dev = tables.state.device
    rows = rows.to(torch.int64).contiguous()
    logits = _check_logits(logits, B)
    n = max(0, min(logits.shape[1], int(vocab_size) - int(id_offset)))
    val = torch.full((2, B), float("-inf"), dtype=torch.float32, device=dev)
    idx = torch.full((2, B), _NO_ID, dtype=torch.int32, device=dev)
    if n > 0 and B > 0:
        part_val, part_idx = _stage1(logits, rows, tables._replace(think_end=tables.think_end.to(torch.int64)
                                                                   .contiguous()),
                                     n, int(id_offset), block_v, num_chunks)
        val = part_val.max(dim=-1).values
        idx = torch.where(part_val == val[..., None], part_idx, _NO_ID).min(dim=-1).values
    return torch.stack([val.contiguous().view(torch.int32), idx.to(torch.int32)])


def force_from_partials(parts: torch.Tensor, rows: torch.Tensor, tables: fs.ForceTables, vocab_size: int,
                        pad_id: int) -> torch.Tensor:
    """Stage 2 on every shard's packed partials [W, 2, 2, B] (rank order): the rules kernel reduces
    the W partials of each row (max, ties -> lowest id) and applies the rules. Same result as
    s1/kernels/reference.py::force_from_partials; identical on every rank."""
    _check_tables(tables, parts, rows)
    B = rows.shape[0]
    out = torch.empty((fs.NUM_RESULT, B), dtype=torch.int64, device=tables.state.device)
    if B == 0:
        return out
    if parts.dim() != 4 or tuple(parts.shape[1:]) != (2, 2, B) or parts.dtype != torch.int32:
        raise ValueError(f"force_from_partials: parts must be int32 [W, 2, 2, {B}], got {parts.dtype} "
                         f"{tuple(parts.shape)}")
    W = parts.shape[0]
    part_val = parts[:, 0].contiguous().view(torch.float32).permute(1, 2, 0).contiguous()   # [2, B, W]
    part_idx = parts[:, 1].permute(1, 2, 0).contiguous()
    _rules(part_val, part_idx, None, rows.to(torch.int64).contiguous(), tables, out, W, pad_id)
    return out


def _rules(part_val, part_idx, given, rows, tables: fs.ForceTables, out, n_parts: int, pad_id: int) -> None:
    st, _, forced, stop, _, newline = tables[:6]
    B = rows.shape[0]
    think_end = fs.end_rules_of(tables).to(torch.int64).contiguous()     # [3, NUM_END]
    common = dict(NUM_END=think_end.shape[1], NSTOP=stop.shape[1], LMAX=forced.shape[2])
    blk_b = min(64, max(2, triton.next_power_of_2(B)))   # rows per program of the rules pass
    if given is not None:
        _force_kernel[(triton.cdiv(B, blk_b),)](
            given, given, given, rows, st, forced, stop, think_end, newline, out,
            B, 1, pad_id, st.stride(0), forced.stride(0), forced.stride(1), stop.stride(0),
            GIVEN=True, BLOCK_B=blk_b, BLOCK_S=2, num_warps=1, **common)
    else:
        _force_kernel[(triton.cdiv(B, blk_b),)](
            part_val, part_idx, part_idx, rows, st, forced, stop, think_end, newline, out,
            B, n_parts, pad_id, st.stride(0), forced.stride(0), forced.stride(1), stop.stride(0),
            GIVEN=False, BLOCK_B=blk_b, BLOCK_S=max(2, triton.next_power_of_2(n_parts)), num_warps=1, **common)


def sample_and_force(logits: torch.Tensor, rows: torch.Tensor, tables: fs.ForceTables, vocab_size: int,
                     pad_id: int, given: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                     id_offset: int = 0, gather=None,
                     block_v: int | None = None, num_chunks: int | None = None) -> torch.Tensor:
    """Fused sampling + budget forcing: one pass over the logits (grid B x S), then a rules pass
    (grid cdiv(B, 64), 64 rows per program) that reduces the S partials and applies the rules. Same contract as
    s1/kernels/reference.py::sample_and_force (returns [NUM_RESULT, B] int64, updates tables.state).
    `given` = (t_u, t_m) from the top-k / top-p pre-pass: only the rules run.
    Tensor parallelism (`id_offset` / `gather`, as the reference): `sample_partials` on this rank's
    vocabulary shard, `gather` ([world, 2, 2, B] int32: one all-gather of 16 bytes per row), then
    `force_from_partials` -- the rules kernel reduces the world's partials as it does the S chunks."""
    if given is None and (gather is not None or id_offset):
        parts = sample_partials(logits, rows, tables, vocab_size, id_offset, block_v=block_v, num_chunks=num_chunks)
        return force_from_partials(gather(parts) if gather is not None else parts[None], rows, tables,
                                   vocab_size, pad_id)
    st = tables.state
    B = rows.shape[0]
    dev = st.device
    _check_tables(tables, logits, rows)
    rows = rows.to(torch.int64).contiguous()
    out = torch.empty((fs.NUM_RESULT, B), dtype=torch.int64, device=dev)
    if B == 0:
        return out
    tables = tables._replace(think_end=tables.think_end.to(torch.int64).contiguous())
    if given is not None:
        t = torch.stack([given[0].to(torch.int64), given[1].to(torch.int64)]).contiguous()
        _rules(None, None, t, rows, tables, out, 1, pad_id)
        return out
    logits = _check_logits(logits, B)
    part_val, part_idx = _stage1(logits, rows, tables, min(logits.shape[1], int(vocab_size)), 0, block_v, num_chunks)
    _rules(part_val, part_idx, None, rows, tables, out, part_val.shape[2], pad_id)
    return out
