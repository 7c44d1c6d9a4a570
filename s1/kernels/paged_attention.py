"""Paged decode attention with split-K ("flash-decoding") and a log-sum-exp merge.

One query token per sequence attends over its whole cached context, which lives in pages:
    q [B, Hq, D]; k_cache, v_cache [num_pages, page_size, Hk, D]; block_tables [B, max_pages]
    int32 (page ids in order); context_lens [B] int32 (tokens cached, this step's token included).
Returns [B, Hq, D] in q's dtype. GQA: query head h reads kv head h // (Hq // Hk).

Kernel 1 (grid B x Hk x S): program (b, kv head, split s) handles context tokens
[s*CHUNK, (s+1)*CHUNK) for all Hq/Hk query heads sharing that kv head (each K/V row is read once
per group), online softmax in fp32, and writes the unnormalized partial output plus its running
max m and sum l. Kernel 2 (grid B x Hq) merges the valid splits, 16 at a time (online):
    M = max_s m_s,  L = sum_s l_s e^{m_s - M},  O = sum_s acc_s e^{m_s - M} / L.
Splitting keeps the GPU busy at small batch with long contexts (FlashDecoding, Dao et al. 2023).
The grid can be fixed from an upper bound on the context (CUDA graphs): splits past a sequence's
context exit at once and the merge only reads splits < cdiv(context_len, CHUNK).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_attn_split_kernel(q_ptr, kc_ptr, vc_ptr, bt_ptr, ctx_ptr, o_ptr, m_ptr, l_ptr,
                             scale, stride_qb, stride_qh, stride_bt, stride_slot,
                             stride_ob, stride_oh, stride_os, stride_mb, stride_mh,
                             G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, CHUNK: tl.constexpr,
                             BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                             USE_DOT: tl.constexpr):
    b = tl.program_id(0)
    hk = tl.program_id(1)
    s = tl.program_id(2)
    ctx = tl.load(ctx_ptr + b)
    start = s * CHUNK
    if start < ctx:
        end = tl.minimum(start + CHUNK, ctx)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, BLOCK_D)
        gm = g < G
        dm = d < D
        heads = hk * G + g
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
                    mask=gm[:, None] & dm[None, :], other=0.0).to(tl.float32) * scale
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nm = n < end
            page = tl.load(bt_ptr + b * stride_bt + n // PAGE, mask=nm, other=0)
            slot = page.to(tl.int64) * PAGE + n % PAGE
            kv_off = slot[:, None] * stride_slot + hk * D + d[None, :]
            kvm = nm[:, None] & dm[None, :]
            k = tl.load(kc_ptr + kv_off, mask=kvm, other=0.0)                   # [BLOCK_N, BLOCK_D]
            v = tl.load(vc_ptr + kv_off, mask=kvm, other=0.0)
            if USE_DOT:
                # tensor cores (16-bit caches): q rounded to the cache dtype as FlashAttention does
                scores = tl.dot(q.to(k.dtype), tl.trans(k))                        # [BLOCK_G, BLOCK_N] fp32
            else:
                # exact fp32 (and interpreter-safe for bf16: upcast before any arithmetic)
                scores = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)
            scores = tl.where(nm[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(scores - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if USE_DOT:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            else:
                acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
            m_i = m_new
        o_off = b * stride_ob + heads[:, None] * stride_oh + s * stride_os + d[None, :]
        tl.store(o_ptr + o_off, acc, mask=gm[:, None] & dm[None, :])
        ml_off = b * stride_mb + heads * stride_mh + s
        tl.store(m_ptr + ml_off, m_i, mask=gm)
        tl.store(l_ptr + ml_off, l_i, mask=gm)


@triton.jit
def _paged_attn_merge_kernel(o_ptr, m_ptr, l_ptr, ctx_ptr, out_ptr,
                             stride_ob, stride_oh, stride_os, stride_mb, stride_mh,
                             stride_outb, stride_outh,
                             D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_S: tl.constexpr,
                             BLOCK_D: tl.constexpr):
    # Online merge over the valid splits, BLOCK_S at a time: registers stay at BLOCK_S x BLOCK_D
    # whatever the split count (a CUDA graph fixes S from max_model_len: up to hundreds of splits;
    # one [S, D] tile at D = 128 spilled registers, ~28 us per layer on an H200).
    b = tl.program_id(0)
    h = tl.program_id(1)
    ctx = tl.load(ctx_ptr + b)
    n_valid = (ctx + CHUNK - 1) // CHUNK
    d = tl.arange(0, BLOCK_D)
    dm = d < D
    M = tl.full([1], float("-inf"), tl.float32)
    L = tl.zeros([1], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, n_valid, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        sm = s < n_valid
        m = tl.load(m_ptr + b * stride_mb + h * stride_mh + s, mask=sm, other=float("-inf"))
        l = tl.load(l_ptr + b * stride_mb + h * stride_mh + s, mask=sm, other=0.0)
        o = tl.load(o_ptr + b * stride_ob + h * stride_oh + s[:, None] * stride_os + d[None, :],
                    mask=sm[:, None] & dm[None, :], other=0.0)
        M_new = tl.maximum(M, tl.max(m, axis=0))
        alpha = tl.exp(M - M_new)
        w = tl.where(sm, tl.exp(m - M_new), 0.0)
        L = L * alpha + tl.sum(w * l, axis=0)
        acc = acc * alpha + tl.sum(w[:, None] * o, axis=0)
        M = M_new
    out = acc / L
    tl.store(out_ptr + b * stride_outb + h * stride_outh + d, out.to(out_ptr.dtype.element_ty), mask=dm)


def choose_split(max_context: int, batch: int, num_kv_heads: int, block_n: int,
                 target_programs: int = 264) -> tuple[int, int]:
    """(chunk, num_splits): enough programs to fill ~2 waves of an H100's 132 SMs."""
    max_context = max(int(max_context), 1)
    max_splits = triton.cdiv(max_context, block_n)
    splits = max(1, min(max_splits, triton.cdiv(target_programs, max(batch * num_kv_heads, 1))))
    chunk = triton.cdiv(triton.cdiv(max_context, splits), block_n) * block_n
    return chunk, triton.cdiv(max_context, chunk)


def paged_attention_triton(q, k_cache, v_cache, block_tables, context_lens, scale: float,
                           max_context: int | None = None, num_splits: int | None = None,
                           block_n: int | None = None, use_dot: bool | None = None) -> torch.Tensor:
    """max_context: an upper bound on context_lens (default: computed, a host sync); fix it for
    CUDA graphs. num_splits: override the split count (tests). use_dot (default: 16-bit caches)
    computes QK^T and PV with tl.dot on a query-head group padded to 16 rows (tensor cores);
    otherwise broadcast-multiply-reduce in fp32 (exact for fp32 caches)."""
    if use_dot is None:
        use_dot = k_cache.dtype in (torch.float16, torch.bfloat16)
    if block_n is None:
        block_n = 32 if use_dot else 16
    B, Hq, D = q.shape
    P, PAGE, Hk, Dk = k_cache.shape
    if Dk != D or v_cache.shape != k_cache.shape or Hq % Hk:
        raise ValueError(f"paged_attention: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}")
    if block_tables.dim() != 2 or block_tables.shape[0] != B or context_lens.shape != (B,):
        raise ValueError(f"paged_attention: block_tables {tuple(block_tables.shape)}, "
                         f"context_lens {tuple(context_lens.shape)} for batch {B}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()) or q.stride(2) != 1:
        raise ValueError("paged_attention: caches must be contiguous and q's last dim dense")
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise ValueError("paged_attention: block_tables and context_lens must be int32")
    G = Hq // Hk
    if max_context is None:
        max_context = int(context_lens.max()) if B else 1
    if num_splits is None:
        chunk, S = choose_split(max_context, B, Hk, block_n)
    else:
        chunk = triton.cdiv(triton.cdiv(max(max_context, 1), num_splits), block_n) * block_n
        S = triton.cdiv(max(max_context, 1), chunk)
    out = torch.empty_like(q)
    if B == 0:
        return out
    o_part = torch.empty(B, Hq, S, D, device=q.device, dtype=torch.float32)
    m_part = torch.empty(B, Hq, S, device=q.device, dtype=torch.float32)
    l_part = torch.empty(B, Hq, S, device=q.device, dtype=torch.float32)
    BLOCK_D = triton.next_power_of_2(D)
    _paged_attn_split_kernel[(B, Hk, S)](
        q, k_cache, v_cache, block_tables, context_lens, o_part, m_part, l_part,
        scale, q.stride(0), q.stride(1), block_tables.stride(0), Hk * D,
        o_part.stride(0), o_part.stride(1), o_part.stride(2), m_part.stride(0), m_part.stride(1),
        G=G, D=D, PAGE=PAGE, CHUNK=chunk,
        BLOCK_G=max(triton.next_power_of_2(G), 16 if use_dot else 1),
        BLOCK_D=BLOCK_D, BLOCK_N=block_n, USE_DOT=use_dot)
    _paged_attn_merge_kernel[(B, Hq)](
        o_part, m_part, l_part, context_lens, out,
        o_part.stride(0), o_part.stride(1), o_part.stride(2), m_part.stride(0), m_part.stride(1),
        out.stride(0), out.stride(1),
        D=D, CHUNK=chunk, BLOCK_S=min(16, max(triton.next_power_of_2(S), 2)), BLOCK_D=BLOCK_D)
    return out
