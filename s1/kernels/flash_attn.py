"""FlashAttention-2 forward and backward in Triton: varlen (packed) sequences, causal with
bottom-right alignment, grouped-query attention without repeating K/V, fp16/bf16/fp32.

Layout (FlashAttention's varlen convention, = s1/kernels/reference.py::attention):
    q [Tq, Hq, D], k/v [Tk, Hk, D], cu_seqlens_q/k [B+1] int32 offsets; Hq % Hk == 0 and query
    head h reads kv head h // (Hq // Hk). Sequence b's queries are the *last* lq of its lk keys, so
    with causal=True query row r (0-based within the sequence) sees key columns c <= r + (lk - lq)
    (bottom-right alignment: prefill over a cached prefix, lq < lk). Rows that see no key at all
    (only possible if lq > lk) produce 0, as FlashAttention does.
    D must be a power of two in [16, 256]; last-dim stride 1, token/head strides arbitrary.

Algorithm: Dao, "FlashAttention-2" (2023), Alg. 1 (forward) and Alg. 2 (backward), in the
structure of Triton's fused-attention tutorial (06-fused-attention.py):
  * forward: one program per (query tile, query head, sequence); online softmax in the exp2
    domain (scores pre-multiplied by scale*log2(e)); key tiles that are fully visible run without
    any mask, only tiles that cross the causal diagonal or the sequence end are masked. Saves
    LSE (log2 domain, [Hq, Tq] fp32) for the backward.
  * backward: delta = rowsum(dO * O) (preprocess kernel); dK/dV kernel with one program per
    (key tile, *kv* head, sequence) that loops over the group's query heads and query tiles and
    accumulates dK, dV in registers (GQA without materializing repeated K/V or per-q-head
    partials); dQ kernel with one program per (query tile, query head, sequence).
Accumulation is fp32; P and dS are rounded to the input dtype before their matmuls (as FA2).
fp32 inputs use input_precision="ieee" dots (exact, slow; meant for tests), 16-bit inputs the
tensor cores.

FLOPs (for TFLOP/s): forward 4 * lq * lk * D * Hq per sequence (half of that with causal when
lq == lk); backward 2.5x the forward (5 matmuls instead of 2).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from s1.kernels.triton_utils import check_device, interpreting

LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, start_n, offs_m, offs_n, offs_d,
              lk, diff, qk_scale,
              MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr):
    cols = start_n + offs_n                                   # [BN] key index within the sequence
    if MASK:
        cmask = cols < lk
        kT = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kt + offs_d[:, None],
                     mask=cmask[None, :], other=0.0)           # [D, BN]
        v = tl.load(v_base + cols[:, None].to(tl.int64) * stride_vt + offs_d[None, :],
                    mask=cmask[:, None], other=0.0)            # [BN, D]
    else:
        kT = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kt + offs_d[:, None])
        v = tl.load(v_base + cols[:, None].to(tl.int64) * stride_vt + offs_d[None, :])
    qk = tl.dot(q, kT, input_precision=DOT_PREC) * qk_scale   # [BM, BN], log2 domain
    if MASK:
        vis = cmask[None, :]
        if CAUSAL:
            vis = vis & (cols[None, :] <= offs_m[:, None] + diff)
        qk = tl.where(vis, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # rows that have seen no visible key yet keep m = -inf: subtract 0 instead (no inf - inf)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_sub = m_new
    p = tl.math.exp2(qk - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    # accumulate in place (tl.dot's acc argument): on Hopper the wgmma accumulates into acc's
    # registers instead of producing a second [BM, D] fp32 tile
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
    return acc, l_i, m_new


@triton.jit
def _attn_fwd_kernel(Q, K, V, O, LSE, cu_q, cu_k, qk_scale,
                     stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_ot, stride_oh, stride_lse_h, seq_bucket,
                     GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr):
    # heaviest (last) query tiles first: they have the most key tiles under a causal mask
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start = tl.load(cu_q + b)
    lq = tl.load(cu_q + b + 1) - q_start
    k_start = tl.load(cu_k + b)
    lk = tl.load(cu_k + b + 1) - k_start
    m0 = pid_m * BLOCK_M
    if m0 >= lq:
        return
    kvh = h // GROUP
    diff = lk - lq
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rmask = offs_m < lq
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + q_rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=rmask[:, None], other=0.0)
    k_base = K + tl.cast(k_start, tl.int64) * stride_kt + kvh * stride_kh
    v_base = V + tl.cast(k_start, tl.int64) * stride_vt + kvh * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        full_end = tl.minimum(tl.maximum(m0 + diff + 1, 0), lk)   # keys every row of the tile sees
        hi = tl.minimum(tl.maximum(m0 + BLOCK_M + diff, 0), lk)   # keys any row of the tile sees
    else:
        full_end = lk
        hi = lk
    full_end = (full_end // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, start_n,
                                  offs_m, offs_n, offs_d, lk, diff, qk_scale, False, CAUSAL, DOT_PREC)
    for start_n in range(full_end, hi, BLOCK_N):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, start_n,
                                  offs_m, offs_n, offs_d, lk, diff, qk_scale, True, CAUSAL, DOT_PREC)
    empty = l_i == 0.0                                           # rows with no visible key
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(l_safe))  # +inf -> P = 0 in backward
    tl.store(O + q_rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=rmask[:, None])
    tl.store(LSE + h * stride_lse_h + q_start + offs_m, lse, mask=rmask)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------
@triton.jit
def _bwd_preprocess_kernel(O, DO, DELTA, Tq, H, stride_ot, stride_oh, stride_dot, stride_doh, stride_delta_h,
                           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta[h, t] = sum_d O[t, h, d] * dO[t, h, d] (fp32), over all packed tokens
    pid = tl.program_id(0)
    h = tl.program_id(1)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rmask = offs_m < Tq
    rows = offs_m.to(tl.int64)
    o = tl.load(O + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], mask=rmask[:, None], other=0.0)
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=rmask[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + h * stride_delta_h + offs_m, delta, mask=rmask)


@triton.jit
def _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                   start_m, offs_m, offs_n, offs_d, lq, diff, qk_scale,
                   MASK: tl.constexpr, KEYS_AS_ROWS: tl.constexpr, DOT_PREC: tl.constexpr):
    rows = start_m + offs_m                                       # [BM] query index in the sequence
    rmask = rows < lq
    do = tl.load(do_base + rows[:, None].to(tl.int64) * stride_dot + offs_d[None, :], mask=rmask[:, None], other=0.0)
    # padded query rows: lse = +inf -> P = 0 and dO = 0, so they add nothing to dK/dV
    lse = tl.load(lse_base + rows, mask=rmask, other=float("inf"))
    delta = tl.load(delta_base + rows, mask=rmask, other=0.0)
    # Two equivalent orientations; they compile to different MMA instructions and register
    # footprints on Hopper (wgmma with K/V as A operand vs mma with P^T from registers), so the
    # autotuner gets to pick per shape.
    if KEYS_AS_ROWS:  # tiles are [BN keys, BM queries] (Triton tutorial)
        qT = tl.load(q_base + rows[None, :].to(tl.int64) * stride_qt + offs_d[:, None], mask=rmask[None, :], other=0.0)
        pT = tl.math.exp2(tl.dot(k, qT, input_precision=DOT_PREC) * qk_scale - lse[None, :])
        if MASK:
            pT = tl.where(offs_n[:, None] <= rows[None, :] + diff, pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=DOT_PREC)
    else:  # tiles are [BM queries, BN keys] (FlashAttention-2 paper, Alg. 2)
        q = tl.load(q_base + rows[:, None].to(tl.int64) * stride_qt + offs_d[None, :], mask=rmask[:, None], other=0.0)
        p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale - lse[:, None])
        if MASK:
            p = tl.where(offs_n[None, :] <= rows[:, None] + diff, p, 0.0)
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=DOT_PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, cu_q, cu_k, qk_scale, sm_scale,
                          stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                          stride_dot, stride_doh, stride_dkt, stride_dkh, stride_dvt, stride_dvh,
                          stride_lse_h, seq_bucket,
                          GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, KEYS_AS_ROWS: tl.constexpr, CAUSAL: tl.constexpr,
                          DOT_PREC: tl.constexpr):
    pid_n = tl.program_id(0)
    kvh = tl.program_id(1)
    b = tl.program_id(2)
    q_start = tl.load(cu_q + b)
    lq = tl.load(cu_q + b + 1) - q_start
    k_start = tl.load(cu_k + b)
    lk = tl.load(cu_k + b + 1) - k_start
    n0 = pid_n * BLOCK_N
    if n0 >= lk:
        return
    diff = lk - lq
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    cmask = offs_n < lk
    k_rows = (k_start + offs_n).to(tl.int64)
    k = tl.load(K + k_rows[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :], mask=cmask[:, None], other=0.0)
    v = tl.load(V + k_rows[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :], mask=cmask[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:
        # query rows r see key c iff r >= c - diff: the first tile with any such row, and the first
        # tile whose every row sees every key of this key tile
        lo = (tl.maximum(n0 - diff, 0) // BLOCK_M) * BLOCK_M
        full = tl.cdiv(tl.maximum(n0 + BLOCK_N - 1 - diff, 0), BLOCK_M) * BLOCK_M
        lo = tl.minimum(lo, lq)
        full = tl.minimum(full, lq)
    else:
        lo = 0
        full = 0
    q_seq = tl.cast(q_start, tl.int64)
    for g in range(GROUP):
        h = kvh * GROUP + g
        q_base = Q + q_seq * stride_qt + h * stride_qh
        do_base = DO + q_seq * stride_dot + h * stride_doh
        lse_base = LSE + h * stride_lse_h + q_start
        delta_base = DELTA + h * stride_lse_h + q_start
        for start_m in range(lo, full, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                                    start_m, offs_m, offs_n, offs_d, lq, diff, qk_scale, True, KEYS_AS_ROWS, DOT_PREC)
        for start_m in range(full, lq, BLOCK_M):
            dk, dv = _bwd_dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot,
                                    start_m, offs_m, offs_n, offs_d, lq, diff, qk_scale, False, KEYS_AS_ROWS,
                                    DOT_PREC)
    dk = dk * sm_scale
    tl.store(DK + k_rows[:, None] * stride_dkt + kvh * stride_dkh + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=cmask[:, None])
    tl.store(DV + k_rows[:, None] * stride_dvt + kvh * stride_dvh + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=cmask[:, None])


@triton.jit
def _bwd_dq_tile(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, start_n, offs_m, offs_n, offs_d,
                 lk, diff, qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr):
    cols = start_n + offs_n
    if MASK:
        cmask = cols < lk
        k = tl.load(k_base + cols[:, None].to(tl.int64) * stride_kt + offs_d[None, :], mask=cmask[:, None], other=0.0)
        vT = tl.load(v_base + cols[None, :].to(tl.int64) * stride_vt + offs_d[:, None], mask=cmask[None, :], other=0.0)
    else:
        k = tl.load(k_base + cols[:, None].to(tl.int64) * stride_kt + offs_d[None, :])
        vT = tl.load(v_base + cols[None, :].to(tl.int64) * stride_vt + offs_d[:, None])
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.math.exp2(qk - lse[:, None])
    if MASK:
        vis = cmask[None, :]
        if CAUSAL:
            vis = vis & (cols[None, :] <= offs_m[:, None] + diff)
        p = tl.where(vis, p, 0.0)
    dp = tl.dot(do, vT, input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, cu_q, cu_k, qk_scale, sm_scale,
                        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                        stride_dot, stride_doh, stride_dqt, stride_dqh, stride_lse_h, seq_bucket,
                        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start = tl.load(cu_q + b)
    lq = tl.load(cu_q + b + 1) - q_start
    k_start = tl.load(cu_k + b)
    lk = tl.load(cu_k + b + 1) - k_start
    m0 = pid_m * BLOCK_M
    if m0 >= lq:
        return
    kvh = h // GROUP
    diff = lk - lq
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rmask = offs_m < lq
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(Q + q_rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=rmask[:, None], other=0.0)
    do = tl.load(DO + q_rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=rmask[:, None], other=0.0)
    lse = tl.load(LSE + h * stride_lse_h + q_start + offs_m, mask=rmask, other=float("inf"))
    delta = tl.load(DELTA + h * stride_lse_h + q_start + offs_m, mask=rmask, other=0.0)
    k_base = K + tl.cast(k_start, tl.int64) * stride_kt + kvh * stride_kh
    v_base = V + tl.cast(k_start, tl.int64) * stride_vt + kvh * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        full_end = tl.minimum(tl.maximum(m0 + diff + 1, 0), lk)
        hi = tl.minimum(tl.maximum(m0 + BLOCK_M + diff, 0), lk)
    else:
        full_end = lk
        hi = lk
    full_end = (full_end // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):
        dq = _bwd_dq_tile(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, start_n, offs_m, offs_n,
                          offs_d, lk, diff, qk_scale, False, CAUSAL, DOT_PREC)
    for start_n in range(full_end, hi, BLOCK_N):
        dq = _bwd_dq_tile(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, start_n, offs_m, offs_n,
                          offs_d, lk, diff, qk_scale, True, CAUSAL, DOT_PREC)
    dq = dq * sm_scale
    tl.store(DQ + q_rows[:, None] * stride_dqt + h * stride_dqh + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=rmask[:, None])


# --------------------------------------------------------------------------------------------
# configs: fixed tiles in the interpreter (no autotune there); autotuned on CUDA for 16-bit
# --------------------------------------------------------------------------------------------
# Tile sizes the interpreter uses; tests override them to exercise ragged tile boundaries and
# both dK/dV orientations.
INTERPRET_TILES = {"fwd": (32, 32), "dkdv": (32, 32), "dq": (32, 32)}
INTERPRET_KEYS_AS_ROWS = True
_AUTOTUNE = os.environ.get("S1_ATTN_AUTOTUNE", "1") != "0"

# Candidate configs (BLOCK_M, BLOCK_N, num_warps, num_stages[, KEYS_AS_ROWS]). Chosen without a
# GPU from an sm_90 compile (triton.compile to cubin + ptxas -v, bf16, hd 64/128): only configs
# that spill little or nothing, e.g. the dK/dV kernel with (32, 128, 4 warps) spills 6 KB at
# hd128 and was dropped. The autotuner times them on the real device.
_CONFIGS = {
    "fwd": [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (128, 32, 4, 4)],
    "dkdv": [(32, 64, 8, 2, False), (32, 128, 8, 2, False), (32, 64, 4, 2, False),
             (16, 64, 4, 2, True), (16, 128, 8, 2, True), (32, 128, 8, 3, True)],
    "dq": [(128, 32, 8, 3), (128, 64, 8, 3), (64, 32, 4, 4), (64, 64, 4, 3)],
}


def _meta(kind, cfg):
    meta = {"BLOCK_M": cfg[0], "BLOCK_N": cfg[1]}
    if kind == "dkdv":
        meta["KEYS_AS_ROWS"] = cfg[4]
    return meta


def _fixed_config(kind: str, head_dim: int, dtype: torch.dtype):
    """(meta, num_warps, num_stages) without autotuning."""
    if interpreting():
        bm, bn = INTERPRET_TILES[kind]
        return _meta(kind, (bm, bn, 1, 1, INTERPRET_KEYS_AS_ROWS)), 1, 1
    if dtype == torch.float32:  # exact ieee dots: small tiles to fit registers/shared memory
        return _meta(kind, (32, 32, 4, 2, True)), 4, 2
    cfg = {"fwd": (128, 64, 8, 3),
           "dkdv": (32, 64, 8, 2, False) if head_dim >= 128 else (32, 128, 8, 2, False),
           "dq": (128, 32, 8, 3)}[kind]
    return _meta(kind, cfg), cfg[2], cfg[3]


def _tune_configs(kind: str):
    return [triton.Config(_meta(kind, c), num_warps=c[2], num_stages=c[3]) for c in _CONFIGS[kind]]


_KEY = ["seq_bucket", "GROUP", "HEAD_DIM", "CAUSAL", "DOT_PREC"]
if not interpreting():
    _fwd_tuned = triton.autotune(_tune_configs("fwd"), key=_KEY)(_attn_fwd_kernel)
    _dkdv_tuned = triton.autotune(_tune_configs("dkdv"), key=_KEY)(_attn_bwd_dkdv_kernel)
    _dq_tuned = triton.autotune(_tune_configs("dq"), key=_KEY)(_attn_bwd_dq_kernel)


def _launch(kind, kernel, tuned, grid_fn, args, head_dim, dtype, **meta):
    if _AUTOTUNE and not interpreting() and dtype != torch.float32:
        tuned[lambda META: grid_fn(META["BLOCK_M"], META["BLOCK_N"])](*args, **meta)
    else:
        cfg, warps, stages = _fixed_config(kind, head_dim, dtype)
        kernel[grid_fn(cfg["BLOCK_M"], cfg["BLOCK_N"])](*args, **cfg, num_warps=warps, num_stages=stages, **meta)


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------
def _check_inputs(q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k):
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"attention: q, k, v must be [T, H, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} differ in shape")
    Hq, D = q.shape[1], q.shape[2]
    Hk = k.shape[1]
    if k.shape[2] != D:
        raise ValueError(f"attention: head_dim of q ({D}) and k ({k.shape[2]}) differ")
    if Hk == 0 or Hq % Hk:
        raise ValueError(f"attention: num query heads {Hq} not a multiple of num kv heads {Hk}")
    if D < 16 or D > 256 or D & (D - 1):
        raise ValueError(f"attention: head_dim {D} must be a power of two in [16, 256]")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"attention: q/k/v dtypes must match and be fp16/bf16/fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        if cu.dim() != 1 or cu.dtype != torch.int32:
            raise ValueError(f"attention: {name} must be a 1-D int32 tensor, got {cu.dtype} {tuple(cu.shape)}")
    if cu_q.shape != cu_k.shape:
        raise ValueError(f"attention: cu_seqlens_q {tuple(cu_q.shape)} and cu_seqlens_k {tuple(cu_k.shape)} "
                         "describe different batch sizes")
    check_device("attention", q, k, v, cu_q, cu_k)
    if q.device.type == "cpu":
        # cheap on CPU; on CUDA this would be a host sync per call, so callers are trusted there
        lq = cu_q[1:] - cu_q[:-1]
        lk = cu_k[1:] - cu_k[:-1]
        if int(cu_q[-1]) != q.shape[0] or int(cu_k[-1]) != k.shape[0] or int(cu_q[0]) or int(cu_k[0]):
            raise ValueError(f"attention: cu_seqlens must run from 0 to the token counts ({q.shape[0]}, {k.shape[0]})")
        if (lq < 0).any() or (lk < 0).any():
            raise ValueError("attention: cu_seqlens must be non-decreasing")
        if lq.numel() and (int(lq.max()) > max_seqlen_q or int(lk.max()) > max_seqlen_k):
            raise ValueError(f"attention: max_seqlen_q/k ({max_seqlen_q}, {max_seqlen_k}) smaller than the longest "
                             f"sequence ({int(lq.max())}, {int(lk.max())})")


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _dot_prec(dtype):
    return "ieee" if dtype == torch.float32 else "tf32"  # "tf32" is Triton's default; unused for 16-bit


def attention_fwd(q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale, causal):
    """Returns out [Tq, Hq, D] (q.dtype) and lse [Hq, Tq] fp32 (log2 domain, scores * scale)."""
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    Tq, Hq, D = q.shape
    Hk = k.shape[1]
    B = cu_q.shape[0] - 1
    out = torch.empty((Tq, Hq, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((Hq, Tq), dtype=torch.float32, device=q.device)
    if Tq == 0 or B == 0 or max_seqlen_q == 0:
        return out, lse
    args = (q, k, v, out, lse, cu_q, cu_k, float(scale) * LOG2E,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            out.stride(0), out.stride(1), lse.stride(0), triton.next_power_of_2(max_seqlen_q))
    _launch("fwd", _attn_fwd_kernel, globals().get("_fwd_tuned"),
            lambda bm, bn: (triton.cdiv(max_seqlen_q, bm), Hq, B), args, D, q.dtype,
            GROUP=Hq // Hk, HEAD_DIM=D, CAUSAL=bool(causal), DOT_PREC=_dot_prec(q.dtype))
    return out, lse


def attention_bwd(do, q, k, v, out, lse, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale, causal):
    do = _last_dim_contiguous(do)
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    Tq, Hq, D = q.shape
    Tk, Hk, _ = k.shape
    B = cu_q.shape[0] - 1
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    if B == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    delta = torch.empty((Hq, Tq), dtype=torch.float32, device=q.device)
    if Tq:
        bm_pre = 64  # 128 x hd128 with 4 warps spills on sm_90 (ptxas)
        _bwd_preprocess_kernel[(triton.cdiv(Tq, bm_pre), Hq)](
            out, do, delta, Tq, Hq, out.stride(0), out.stride(1), do.stride(0), do.stride(1), delta.stride(0),
            HEAD_DIM=D, BLOCK_M=bm_pre, num_warps=1 if interpreting() else 4)
    qk_scale = float(scale) * LOG2E
    common = dict(GROUP=Hq // Hk, HEAD_DIM=D, CAUSAL=bool(causal), DOT_PREC=_dot_prec(q.dtype))
    if Tk and max_seqlen_k:
        args = (q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, qk_scale, float(scale),
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
                lse.stride(0), triton.next_power_of_2(max_seqlen_k))
        _launch("dkdv", _attn_bwd_dkdv_kernel, globals().get("_dkdv_tuned"),
                lambda bm, bn: (triton.cdiv(max_seqlen_k, bn), Hk, B), args, D, q.dtype, **common)
    if Tq and max_seqlen_q:
        args = (q, k, v, do, lse, delta, dq, cu_q, cu_k, qk_scale, float(scale),
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                do.stride(0), do.stride(1), dq.stride(0), dq.stride(1), lse.stride(0),
                triton.next_power_of_2(max_seqlen_q))
        _launch("dq", _attn_bwd_dq_kernel, globals().get("_dq_tuned"),
                lambda bm, bn: (triton.cdiv(max_seqlen_q, bm), Hq, B), args, D, q.dtype, **common)
    return dq, dk, dv


class FlashAttnVarlenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale, causal):
        out, lse = attention_fwd(q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale, causal)
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
        ctx.args = (max_seqlen_q, max_seqlen_k, scale, causal)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
        dq, dk, dv = attention_bwd(do, q, k, v, out, lse, cu_q, cu_k, *ctx.args)
        return dq, dk, dv, None, None, None, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
              max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool = True) -> torch.Tensor:
    """Varlen FlashAttention-2; same contract as s1.kernels.reference.attention."""
    _check_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return FlashAttnVarlenFunction.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q),
                                         int(max_seqlen_k), float(scale), bool(causal))


def attention_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                     causal: bool = True) -> torch.Tensor:
    """Equal-length batch form: q [B, Sq, Hq, D], k/v [B, Sk, Hk, D] -> [B, Sq, Hq, D].

    A thin wrapper that builds cu_seqlens and calls the varlen kernel (Sq < Sk = bottom-right causal).
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or q.shape[0] != k.shape[0]:
        raise ValueError(f"attention_padded: need q [B, Sq, H, D] and k/v [B, Sk, Hk, D]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    scale = D ** -0.5 if scale is None else scale
    dev = q.device
    cu_q = torch.arange(0, (B + 1) * Sq, Sq, dtype=torch.int32, device=dev)
    cu_k = torch.arange(0, (B + 1) * Sk, Sk, dtype=torch.int32, device=dev)
    out = attention(q.reshape(B * Sq, Hq, D), k.reshape(B * Sk, k.shape[2], D), v.reshape(B * Sk, v.shape[2], D),
                    cu_q, cu_k, Sq, Sk, scale, causal)
    return out.view(B, Sq, Hq, D)


def attention_flops(seqlens_q, seqlens_k, num_heads: int, head_dim: int, causal: bool, backward: bool = False) -> float:
    """Matmul FLOPs: 4*lq*lk*D per head forward (QK^T and PV), causal counts the visible part,
    backward 2.5x forward (5 matmuls, dS recomputation excluded as in FA2's accounting)."""
    total = 0.0
    for lq, lk in zip(seqlens_q, seqlens_k):
        if causal:
            # visible pairs with bottom-right alignment: sum_r min(lk, r + lk - lq + 1)
            pairs = lq * (lk - lq) + lq * (lq + 1) / 2 if lq <= lk else \
                sum(max(0, min(lk, r + lk - lq + 1)) for r in range(lq))
        else:
            pairs = lq * lk
        total += 4.0 * pairs * head_dim * num_heads
    return total * (2.5 if backward else 1.0)


__all__ = ["attention", "attention_padded", "attention_fwd", "attention_bwd", "attention_flops"]
