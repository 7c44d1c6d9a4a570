"""Plain-PyTorch reference implementations of every hot op, with HF transformers' numerics.

These are the CPU backend and the oracle the Triton kernels are tested against. Shapes use the
packed ("varlen") layout everywhere: tokens of all sequences concatenated along dim 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2RMSNorm: statistics in fp32, cast back to the input dtype, then times weight."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    var = x32.pow(2).mean(-1, keepdim=True)
    x32 = x32 * torch.rsqrt(var + eps)
    return weight * x32.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE. q [T, Hq, D], k [T, Hk, D]; cos, sin [T, D] (fp32, HF's cat(freqs, freqs)).

    HF casts cos/sin to the activation dtype before the multiply; we do the same.
    """
    cos = cos.to(q.dtype).unsqueeze(1)
    sin = sin.to(q.dtype).unsqueeze(1)
    q_out = q * cos + rotate_half(q) * sin
    k_out = k * cos + rotate_half(k) * sin
    return q_out, k_out


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in the activation dtype (HF Qwen2MLP)."""
    return F.silu(gate) * up


def attention_per_sequence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                           max_seqlen_q: int, max_seqlen_k: int, scale: float,
                           causal: bool = True) -> torch.Tensor:
    """Variable-length attention over packed sequences, one SDPA call per sequence (the oracle).

    q [Tq, Hq, D]; k, v [Tk, Hk, D] with Hq % Hk == 0 (GQA); cu_seqlens_* [B+1] int32 offsets.
    Sequence i's queries are the *last* (q_len_i) positions of its (k_len_i) keys, so the causal
    mask is aligned bottom-right (as flash_attn_varlen_func): query j sees keys <= k_len - q_len + j.
    Returns [Tq, Hq, D] in q's dtype.
    """
    Hq, Hk = q.shape[1], k.shape[1]
    if Hq % Hk:
        raise ValueError(f"num query heads {Hq} not a multiple of num kv heads {Hk}")
    out = torch.empty_like(q)
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    for i in range(len(cq) - 1):
        qs, qe, ks, ke = cq[i], cq[i + 1], ck[i], ck[i + 1]
        lq, lk = qe - qs, ke - ks
        if lq == 0:
            continue
        if lq > lk:
            raise ValueError(f"sequence {i}: {lq} queries but only {lk} keys")
        qi = q[qs:qe].transpose(0, 1)  # [Hq, lq, D]
        ki = k[ks:ke].transpose(0, 1).repeat_interleave(Hq // Hk, dim=0)
        vi = v[ks:ke].transpose(0, 1).repeat_interleave(Hq // Hk, dim=0)
        mask = None
        if causal:
            row = torch.arange(lq, device=q.device).unsqueeze(1) + (lk - lq)
            col = torch.arange(lk, device=q.device).unsqueeze(0)
            mask = col <= row
        o = F.scaled_dot_product_attention(qi.unsqueeze(0), ki.unsqueeze(0), vi.unsqueeze(0),
                                           attn_mask=mask, scale=scale)
        out[qs:qe] = o[0].transpose(0, 1)
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
              max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool = True) -> torch.Tensor:
    """Same contract as `attention_per_sequence`, in one SDPA call for the whole batch.

    The packed rows are scattered into a padded [B, H, S, D] batch and attended once under a mask
    (key padding + bottom-right causal), then gathered back; differentiable. A Python loop over
    sequences costs more than the math for CPU batches of many short sequences (training, prefill
    of a batch of prompts); padding costs B * max_len^2 scores, so one sequence goes straight
    through. Checked against `attention_per_sequence` in tests/test_model.py.
    """
    Tq, Hq, D = q.shape
    Hk = k.shape[1]
    if Hq % Hk:
        raise ValueError(f"num query heads {Hq} not a multiple of num kv heads {Hk}")
    B = cu_seqlens_q.numel() - 1
    if B == 1:
        return attention_per_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                      scale, causal)
    dev = q.device
    cq, ck = cu_seqlens_q.long(), cu_seqlens_k.long()
    lq, lk = cq[1:] - cq[:-1], ck[1:] - ck[:-1]                          # [B]
    if bool((lq > lk).any()):
        i = int((lq > lk).nonzero()[0])
        raise ValueError(f"sequence {i}: {int(lq[i])} queries but only {int(lk[i])} keys")
    Sq, Sk = int(max_seqlen_q), int(max_seqlen_k)

    def scatter(x, cu, lens, S):                                         # [T, H, D] -> [B, H, S, D]
        T = x.shape[0]
        seq = torch.repeat_interleave(torch.arange(B, device=dev), lens, output_size=T)
        flat = seq * S + (torch.arange(T, device=dev) - cu[seq])
        buf = x.new_zeros(B * S, x.shape[1], D).index_copy(0, flat, x)
        return buf.view(B, S, x.shape[1], D).transpose(1, 2), flat

    qp, q_rows = scatter(q, cq, lq, Sq)
    kp, _ = scatter(k, ck, lk, Sk)
    vp, _ = scatter(v, ck, lk, Sk)
    if Hq != Hk:
        kp, vp = kp.repeat_interleave(Hq // Hk, dim=1), vp.repeat_interleave(Hq // Hk, dim=1)
    row = torch.arange(Sq, device=dev)
    col = torch.arange(Sk, device=dev)
    mask = (col[None, None, :] < lk[:, None, None]).expand(B, Sq, Sk)    # real keys only
    if causal:                                                           # key j <= (lk - lq) + i
        mask = mask & (col[None, None, :] <= (lk - lq)[:, None, None] + row[None, :, None])
    # A row with no visible key (padding of an empty sequence) would give NaN; let it see key 0.
    mask = mask | ((col == 0)[None, None, :] & ~mask.any(-1, keepdim=True))
    o = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask[:, None], scale=scale)
    return o.transpose(1, 2).reshape(B * Sq, Hq, D)[q_rows]


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """Summed token cross-entropy of logits = hidden @ weight.T (HF: logits upcast to fp32).

    hidden [N, H], weight [V, H], labels [N] (ignore_index excluded). Returns an fp32 scalar.
    The reference materializes the [N, V] logits; the Triton kernel does not.
    """
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
