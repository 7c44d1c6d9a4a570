"""Store this step's K/V rows into the paged KV cache.

Cache layout (per layer): k_cache, v_cache [num_pages, page_size, Hk, D]; a token's *slot* is
page * page_size + offset, so the cache viewed as [num_pages * page_size, Hk, D] is indexed by
slot. slot_mapping [T] int64 gives each new token's slot; -1 skips the row (padding rows of a
CUDA-graph batch bucket).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_store_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr,
                     stride_kt, stride_vt, ROW: tl.constexpr, BLOCK: tl.constexpr):
    # one program per token: copy its Hk*D contiguous K and V elements into its slot
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    if slot >= 0:
        for start in range(0, ROW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            m = offs < ROW
            k = tl.load(k_ptr + t * stride_kt + offs, mask=m)
            v = tl.load(v_ptr + t * stride_vt + offs, mask=m)
            tl.store(kc_ptr + slot * ROW + offs, k, mask=m)
            tl.store(vc_ptr + slot * ROW + offs, v, mask=m)


def kv_store_triton(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """k, v [T, Hk, D] (rows may be strided, each row contiguous); caches [P, page, Hk, D] contiguous."""
    T, Hk, D = k.shape
    if v.shape != k.shape or k_cache.shape[2:] != (Hk, D) or v_cache.shape != k_cache.shape:
        raise ValueError(f"kv_store: shapes k {tuple(k.shape)} v {tuple(v.shape)} cache {tuple(k_cache.shape)}")
    if k.dtype != k_cache.dtype or v.dtype != v_cache.dtype:
        raise ValueError(f"kv_store: dtype {k.dtype} vs cache {k_cache.dtype}")
    if slot_mapping.shape != (T,):
        raise ValueError(f"kv_store: slot_mapping {tuple(slot_mapping.shape)} for {T} tokens")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("kv_store: caches must be contiguous")
    if k.stride(2) != 1 or k.stride(1) != D or v.stride(2) != 1 or v.stride(1) != D:
        k, v = k.contiguous(), v.contiguous()
    if T == 0:
        return
    row = Hk * D
    _kv_store_kernel[(T,)](k, v, k_cache, v_cache, slot_mapping, k.stride(0), v.stride(0),
                           ROW=row, BLOCK=min(triton.next_power_of_2(row), 1024))
