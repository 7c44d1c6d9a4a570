"""Plain-PyTorch reference implementations of every hot op, with HF transformers' numerics.

These are the CPU backend and the oracle the Triton kernels are tested against. Shapes use the
packed ("varlen") layout everywhere: tokens of all sequences concatenated along dim 0.

Also the sampler's counter-based noise (`uniform_noise`, moved here from infer/budget.py, which
re-exports it) and `gumbel_argmax`, the fused sampling op (Triton: kernels/sampling.py).
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


# ----------------------------------------------------------------------------------------- sampling
# u(seed, pos, id) in (0, 1]: a counter-based hash, so a request's samples depend only on its own
# seed and output position (see infer/budget.py). The spec is the int64 form (`_h32`,
# `_uniform_noise_i64`): 32-bit values held in int64 and masked after every multiply. `uniform_noise`
# computes the same bits in int32 (multiplies wrap mod 2^32; right shifts are arithmetic, so the
# shifted-in sign bits are masked off), in place: ~2.4x faster on CPU (B=4, V=151,936, 1 thread);
# tests/test_sampling_kernel.py checks the two bit for bit. kernels/sampling.py does it in uint32.
_M32 = 0xFFFFFFFF
_MASKED_TOO_MANY = 16  # mask_ids longer than this are refused (the Triton kernel unrolls over them)


def _h32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash (C. Wellons) on int64 tensors holding 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 -> int32 with the same low 32 bits (two's complement), without relying on overflow."""
    return (((x & _M32) ^ 0x80000000) - 0x80000000).to(torch.int32)


def _h32_i32_(x: torch.Tensor, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """`_h32` in place on an int32 tensor holding the 32-bit pattern (bit-identical low 32 bits).
    `tmp`: optional scratch of x's shape and dtype."""
    t = torch.empty_like(x) if tmp is None else tmp
    for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B - (1 << 32)), (16, None)):
        torch.bitwise_right_shift(x, shift, out=t)
        x.bitwise_xor_(t.bitwise_and_((1 << (32 - shift)) - 1))  # logical shift: drop the sign bits
        if mul is not None:
            x.mul_(mul)                                          # wraps mod 2^32
    return x


def _h32_i32(x: torch.Tensor) -> torch.Tensor:
    """`_h32` on int32 bit patterns (out of place)."""
    return _h32_i32_(x.clone())


_IDX_HASH: dict = {}


def _hashed_ids(vocab: int, device) -> torch.Tensor:
    """h32(vocab id) [V] int64, cached per (vocab, device): one hash per element per step instead of two."""
    key = (vocab, str(device))
    if key not in _IDX_HASH:
        _IDX_HASH[key] = _h32(torch.arange(vocab, device=device, dtype=torch.int64) * 0x9E3779B1 + 0x7F4A7C15)
    return _IDX_HASH[key]


_IDX_HASH_I32: dict = {}


def _hashed_ids_i32(vocab: int, device) -> torch.Tensor:
    """`_hashed_ids` as int32 bit patterns, cached likewise."""
    key = (vocab, str(device))
    if key not in _IDX_HASH_I32:
        _IDX_HASH_I32[key] = _to_i32(_hashed_ids(vocab, device))
    return _IDX_HASH_I32[key]


def _row_key(seed: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Per-row key [B] (int64 holding 32 bits) from all 64 bits of the seed and the low 32 of pos."""
    k1 = _h32(_h32(seed & _M32) ^ _h32(pos + 0x632BE5AB))
    return _h32(k1 ^ _h32((seed >> 32) + 0x9E3779B9))


def _uniform_noise_i64(seed: torch.Tensor, pos: torch.Tensor, vocab: int) -> torch.Tensor:
    """The int64 spec of `uniform_noise` (infer/budget.py's original code), kept as the oracle."""
    k1 = _row_key(seed, pos)
    x = _h32(_hashed_ids(vocab, seed.device)[None, :] ^ k1[:, None])
    return ((x >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def uniform_noise(seed: torch.Tensor, pos: torch.Tensor, vocab: int) -> torch.Tensor:
    """u [B, vocab] fp32, a pure function of (seed[b], pos[b], vocab id); int64 seed/pos.

    u = ((x >> 9) + 0.5) * 2^-23: 23 bits, so (2^23 - 1) + 0.5 is exact in fp32 and u lies in
    [2^-24, 1 - 2^-24], strictly inside (0, 1); g = -log(-log u) is finite (|g| < 17). (With 24 bits,
    (2^24 - 1) + 0.5 rounded to 2^24: u == 1.0, g = +inf, and that id won regardless of the
    logits -- in ~0.9% of sampled steps at Qwen's 151,665-token vocabulary.)
    """
    seed, pos = seed.long(), pos.long()
    k1 = _to_i32(_row_key(seed, pos))
    x = _hashed_ids_i32(vocab, seed.device)[None, :] ^ k1[:, None]   # fresh [B, V]: hashed in place
    t = torch.empty_like(x)
    _h32_i32_(x, t)
    torch.bitwise_right_shift(x, 9, out=t)
    return t.bitwise_and_(0x7FFFFF).to(torch.float32).add_(0.5).mul_(1.0 / (1 << 23))


def gumbel_argmax(logits: torch.Tensor, inv_temperature: torch.Tensor, seed: torch.Tensor,
                  pos: torch.Tensor, vocab_size: int, mask_ids: torch.Tensor):
    """Gumbel-max samples (t_u, t_m), int64 [B] each.

    logits [B, V] (fp32/bf16/fp16), inv_temperature [B] (<= 0: greedy row), seed/pos [B] int64,
    mask_ids [M] int64 (the end-of-thinking ids). Only ids < min(V, vocab_size) can win.
    score[b, v] = logits[b, v] * inv_temperature[b] + g  with g = -log(-log(uniform_noise)),
    or logits[b, v] for greedy rows; NaN scores count as +inf. (The old sampler divided by the
    temperature: logits * (1/T) can differ from logits / T in the last bit.)
    t_u = argmax score; t_m = argmax over ids not in mask_ids. Ties -> lowest id; a row whose
    unmasked ids all score -inf gives the lowest unmasked id; if every id is masked, t_m = t_u.
    Computed on full [B, V] tensors (the Triton kernel never builds them).
    """
    if logits.dim() != 2:
        raise ValueError(f"gumbel_argmax: logits must be [B, V], got {tuple(logits.shape)}")
    B, V = logits.shape
    n = min(V, int(vocab_size))
    if n < 1:
        raise ValueError(f"gumbel_argmax: no candidate ids (V={V}, vocab_size={vocab_size})")
    mask_ids = torch.as_tensor(mask_ids, dtype=torch.int64, device=logits.device).reshape(-1)
    if mask_ids.numel() > _MASKED_TOO_MANY:
        raise ValueError(f"gumbel_argmax: {mask_ids.numel()} mask ids > {_MASKED_TOO_MANY}")
    x = logits[:, :n].float()
    inv_t = inv_temperature.float().reshape(B)
    sampled = inv_t > 0
    # skip the noise for an all-greedy batch on CPU (the check would be a host sync on a GPU)
    if x.device.type != "cpu" or bool(sampled.any()):
        g = uniform_noise(seed.reshape(B), pos.reshape(B), n).log_().neg_().log_().neg_()  # -log(-log u)
        z = torch.where(sampled[:, None], (x * inv_t[:, None]).add_(g), x)
    else:
        z = x
    inf = float("inf")
    z = torch.where(torch.isnan(z), inf, z)
    t_u = z.argmax(dim=-1)
    keep = torch.ones(n + 1, dtype=torch.bool, device=x.device)
    keep.index_fill_(0, torch.where((mask_ids >= 0) & (mask_ids < n), mask_ids, n), False)
    keep = keep[:n]
    z_m = z.masked_fill(~keep, -inf)
    t_m = z_m.argmax(dim=-1)
    # all unmasked ids at -inf: argmax may have landed on a masked id; take the lowest unmasked one
    none_finite = z_m.gather(1, t_m[:, None])[:, 0] == -inf
    t_m = torch.where(none_finite, keep.to(torch.uint8).argmax(), t_m)
    t_m = torch.where(keep.any(), t_m, t_u)
    return t_u, t_m
