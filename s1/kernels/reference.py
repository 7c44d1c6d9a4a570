"""Plain-PyTorch reference implementations of every hot op, with HF transformers' numerics.

These are the CPU backend and the oracle the Triton kernels are tested against. Shapes use the
packed ("varlen") layout everywhere: tokens of all sequences concatenated along dim 0.

Also the paged KV cache's store and decode attention, the sampler's counter-based noise
(`uniform_noise`), `gumbel_argmax`, and `sample_and_force`: sampling plus budget forcing in one op
(Triton: s1/kernels/sampling.py; the rules: s1/kernels/force_state.py).
"""
from __future__ import annotations

import math

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
    through. Checked against `attention_per_sequence` in tests/model/test_qwen2.py.
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
# seed and output position (see s1/infer/budget.py). The spec is the int64 form (`_h32`; the whole
# int64 noise is tests/_lib_helpers.py's uniform_noise_i64): 32-bit values held in int64 and masked
# after every multiply. `uniform_noise` computes the same bits in int32 (multiplies wrap mod 2^32;
# right shifts are arithmetic, so the shifted-in sign bits are masked off), in place: ~2.4x faster on
# CPU (B=4, V=151,936, 1 thread); tests/kernels/test_sampling.py checks the two bit for bit.
# s1/kernels/sampling.py does it in uint32.
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


_IDX_HASH: dict = {}


def _hashed_ids(vocab: int, device, id_offset: int = 0) -> torch.Tensor:
    """h32(vocab id) [V] int64 for the ids [id_offset, id_offset + vocab), cached per (vocab, offset,
    device): one hash per element per step instead of two."""
    key = (vocab, id_offset, str(device))
    if key not in _IDX_HASH:
        ids = torch.arange(id_offset, id_offset + vocab, device=device, dtype=torch.int64)
        _IDX_HASH[key] = _h32(ids * 0x9E3779B1 + 0x7F4A7C15)
    return _IDX_HASH[key]


_IDX_HASH_I32: dict = {}


def _hashed_ids_i32(vocab: int, device, id_offset: int = 0) -> torch.Tensor:
    """`_hashed_ids` as int32 bit patterns, cached likewise."""
    key = (vocab, id_offset, str(device))
    if key not in _IDX_HASH_I32:
        _IDX_HASH_I32[key] = _to_i32(_hashed_ids(vocab, device, id_offset))
    return _IDX_HASH_I32[key]


def _row_key(seed: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Per-row key [B] (int64 holding 32 bits) from all 64 bits of the seed and the low 32 of pos."""
    k1 = _h32(_h32(seed & _M32) ^ _h32(pos + 0x632BE5AB))
    return _h32(k1 ^ _h32((seed >> 32) + 0x9E3779B9))


def uniform_noise(seed: torch.Tensor, pos: torch.Tensor, vocab: int, id_offset: int = 0) -> torch.Tensor:
    """u [B, vocab] fp32, a pure function of (seed[b], pos[b], vocab id); int64 seed/pos.
    Column j is the noise of the GLOBAL id id_offset + j (a tensor-parallel vocabulary shard's
    columns get exactly the unsharded row's values there).

    u = ((x >> 9) + 0.5) * 2^-23: 23 bits, so (2^23 - 1) + 0.5 is exact in fp32 and u lies in
    [2^-24, 1 - 2^-24], strictly inside (0, 1); g = -log(-log u) is finite (|g| < 17). (With 24 bits,
    (2^24 - 1) + 0.5 rounded to 2^24: u == 1.0, g = +inf, and that id won regardless of the
    logits -- in ~0.9% of sampled steps at Qwen's 151,665-token vocabulary.)
    """
    seed, pos = seed.long(), pos.long()
    k1 = _to_i32(_row_key(seed, pos))
    x = _hashed_ids_i32(vocab, seed.device, id_offset)[None, :] ^ k1[:, None]   # fresh [B, V]: hashed in place
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


# ---------------------------------------------- sampling over a vocabulary split across ranks
# Tensor parallelism splits the LM head by vocabulary: each rank holds the logits of the ids
# [id_offset, id_offset + V_local). The Gumbel race is then run in two parts: every rank finds the
# winners of its own columns (noise keyed by the GLOBAL id, so each score is bit for bit the
# unsharded one), the per-row partials travel in one all-gather, and every rank reduces them the
# same way (max, ties -> lowest id), which is exactly the unsharded argmax. A partial is packed as
# int32 [2, 2, B]: [0] the winning scores' fp32 bits, [1] their global ids; [:, 0] t_u, [:, 1] t_m.
# A shard without a candidate reports (-inf, NO_ID). s1/kernels/sampling.py packs the same way.
NO_ID = 2 ** 31 - 1


def pack_partials(val: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """val [2, B] fp32 (t_u, t_m scores), idx [2, B] global ids -> int32 [2, 2, B] (one collective)."""
    return torch.stack([val.to(torch.float32).contiguous().view(torch.int32), idx.to(torch.int32)])


def reduce_partials(parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_u, t_m) int64 [B] from every shard's packed partials [W, 2, 2, B]: the highest score, the
    lowest id among the shards holding it; t_m without any candidate (every id masked) is t_u."""
    val = parts[:, 0].contiguous().view(torch.float32)               # [W, 2, B]
    idx = parts[:, 1].to(torch.int64)
    best = val.max(dim=0, keepdim=True).values
    win = torch.where(val == best, idx, NO_ID).min(dim=0).values     # [2, B]
    return win[0], torch.where(win[1] == NO_ID, win[0], win[1])


def gumbel_partials(logits: torch.Tensor, inv_temperature: torch.Tensor, seed: torch.Tensor,
                    pos: torch.Tensor, vocab_size: int, mask_ids: torch.Tensor, id_offset: int = 0):
    """This vocabulary shard's part of `gumbel_argmax`: (val, idx) [2, B] (fp32 scores, int64
    GLOBAL ids) of the local winners of t_u and t_m. logits [B, V_local] hold the ids [id_offset,
    id_offset + V_local); only global ids < vocab_size compete; mask_ids are global ids. Scores are
    the unsharded ones bit for bit (noise keyed by the global id). A t_m winner at -inf is the
    lowest local unmasked id (as `gumbel_argmax`); no candidate at all: (-inf, NO_ID).
    `reduce_partials(gather(pack_partials(val, idx)))` equals `gumbel_argmax` over the full row."""
    if logits.dim() != 2:
        raise ValueError(f"gumbel_partials: logits must be [B, V], got {tuple(logits.shape)}")
    B, V = logits.shape
    dev = logits.device
    n = max(0, min(V, int(vocab_size) - int(id_offset)))
    inf = float("inf")
    val = torch.full((2, B), -inf, dtype=torch.float32, device=dev)
    idx = torch.full((2, B), NO_ID, dtype=torch.int64, device=dev)
    if n == 0 or B == 0:
        return val, idx
    mask_ids = torch.as_tensor(mask_ids, dtype=torch.int64, device=dev).reshape(-1)
    if mask_ids.numel() > _MASKED_TOO_MANY:
        raise ValueError(f"gumbel_partials: {mask_ids.numel()} mask ids > {_MASKED_TOO_MANY}")
    x = logits[:, :n].float()
    inv_t = inv_temperature.float().reshape(B)
    sampled = inv_t > 0
    if x.device.type != "cpu" or bool(sampled.any()):
        g = uniform_noise(seed.reshape(B), pos.reshape(B), n, id_offset).log_().neg_().log_().neg_()
        z = torch.where(sampled[:, None], (x * inv_t[:, None]).add_(g), x)
    else:
        z = x
    z = torch.where(torch.isnan(z), inf, z)
    t_u = z.argmax(dim=-1)
    val[0], idx[0] = z.gather(1, t_u[:, None])[:, 0], t_u + id_offset
    local = mask_ids - id_offset
    keep = torch.ones(n + 1, dtype=torch.bool, device=dev)
    keep.index_fill_(0, torch.where((local >= 0) & (local < n), local, n), False)
    keep = keep[:n]
    z_m = z.masked_fill(~keep, -inf)
    t_m = z_m.argmax(dim=-1)
    v_m = z_m.gather(1, t_m[:, None])[:, 0]
    t_m = torch.where(v_m == -inf, keep.to(torch.uint8).argmax(), t_m)   # lowest unmasked local id
    any_keep = keep.any()
    val[1] = torch.where(any_keep, v_m, -inf)
    idx[1] = torch.where(any_keep, t_m + id_offset, NO_ID)
    return val, idx


# ------------------------------------------------------------------ paged KV cache
def kv_store(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store this step's K/V rows [T, Hk, D] at their cache slots (layout: s1/kernels/kv_store.py):
    index_copy_ into the [slots, Hk, D] view, skipping slot -1 (padding rows)."""
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        k, v, slot_mapping = k[keep], v[keep], slot_mapping[keep]
    Hk, D = k.shape[1:]
    k_cache.view(-1, Hk, D).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, Hk, D).index_copy_(0, slot_mapping, v)


def paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale: float,
                    max_context: int | None = None) -> torch.Tensor:
    """Paged decode attention (layout: s1/kernels/paged_attention.py): gather every sequence's pages
    into a padded [B, N, Hk, D] block, mask positions >= context_len, softmax in fp32. Vectorized
    over the batch (no per-sequence Python loop): the CPU engine decodes hundreds of sequences per
    step. max_context (the Triton kernel's grid bound) is not needed here."""
    B, Hq, D = q.shape
    _, PAGE, Hk, _ = k_cache.shape
    G = Hq // Hk
    if B == 0:
        return torch.empty_like(q)
    lens = context_lens.long()
    n = int(lens.max())
    pages = block_tables[:, :math.ceil(n / PAGE)].long()                 # [B, p]
    k = k_cache[pages].reshape(B, -1, Hk, D)[:, :n].float()                # [B, n, Hk, D]
    v = v_cache[pages].reshape(B, -1, Hk, D)[:, :n].float()
    s = torch.einsum("bhgd,bnhd->bhgn", q.float().view(B, Hk, G, D), k) * scale
    valid = torch.arange(n, device=q.device)[None, :] < lens[:, None]      # [B, n]
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhgn,bnhd->bhgd", p, v).reshape(B, Hq, D).to(q.dtype)


# ------------------------------------------------------------------ sampling + budget forcing
def filtered_choices(logits: torch.Tensor, inv_temperature: torch.Tensor, top_k: torch.Tensor,
                     top_p: torch.Tensor, seed: torch.Tensor, pos: torch.Tensor, vocab_size: int,
                     mask_ids: torch.Tensor):
    """(t_u, t_m) for rows with top-k / top-p (the sort-based pre-pass of `sample_and_force`).

    Greedy rows (inv_temperature <= 0) take the plain argmax. Sampled rows: scores = logits *
    (1/T), filtered to the top-k ids and the nucleus of mass top_p (the first id always stays),
    plus the same Gumbel noise as `gumbel_argmax`. t_m applies top-k / top-p to the distribution
    with the mask ids removed (renormalized), so its nucleus is never empty.
    """
    B, V = logits.shape
    n = min(V, int(vocab_size))
    x = logits[:, :n].float()
    inv_t = inv_temperature.float()
    greedy = inv_t <= 0
    g = uniform_noise(seed.long(), pos.long(), n).log_().neg_().log_().neg_()

    def choose(z):
        scaled = z * torch.where(greedy, torch.ones_like(inv_t), inv_t)[:, None]
        sorted_x, order = scaled.sort(dim=-1, descending=True)
        probs = sorted_x.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        rank = torch.arange(n, device=z.device)[None, :]
        remove = (mass_before >= top_p[:, None]) | ((top_k[:, None] > 0) & (rank >= top_k[:, None]))
        remove &= ((top_k > 0) | (top_p < 1.0))[:, None]       # unfiltered rows keep every id
        remove[:, 0] = False
        filt = torch.empty_like(scaled).scatter_(1, order, sorted_x.masked_fill(remove, float("-inf")))
        return torch.where(greedy[:, None], z, filt + g).argmax(dim=-1)

    mask_ids = torch.as_tensor(mask_ids, dtype=torch.int64, device=x.device).reshape(-1)
    keep = torch.ones(n + 1, dtype=torch.bool, device=x.device)
    keep.index_fill_(0, torch.where((mask_ids >= 0) & (mask_ids < n), mask_ids, n), False)
    t_u = choose(x)
    t_m = choose(x.masked_fill(~keep[:n], float("-inf")))
    return t_u, t_m


def sample_partials(logits: torch.Tensor, rows: torch.Tensor, tables, vocab_size: int,
                    id_offset: int = 0) -> torch.Tensor:
    """Stage 1 of `sample_and_force` on a vocabulary shard (logits [B, V_local] of the ids from
    id_offset): the packed partials int32 [2, 2, B] (see `pack_partials`). Reads the tables only."""
    from s1.kernels import force_state as fs

    st, fp, _, _, think_end, _ = tables[:6]
    val, idx = gumbel_partials(logits, fp[rows, fs.INV_TEMP], st[rows, fs.SEED], st[rows, fs.OUT_COUNT],
                               vocab_size, think_end, id_offset)
    return pack_partials(val, idx)


def force_from_partials(parts: torch.Tensor, rows: torch.Tensor, tables, vocab_size: int,
                        pad_id: int) -> torch.Tensor:
    """Stage 2 of `sample_and_force`: reduce every shard's partials [W, 2, 2, B] (rank order) and
    apply the rules. Identical on every rank that holds the same partials and tables."""
    return sample_and_force(None, rows, tables, vocab_size, pad_id, given=reduce_partials(parts))


def sample_and_force(logits: torch.Tensor, rows: torch.Tensor, tables, vocab_size: int, pad_id: int,
                     given: tuple[torch.Tensor, torch.Tensor] | None = None, *, id_offset: int = 0,
                     gather=None) -> torch.Tensor:
    """Sample one token per row and apply budget forcing (s1/kernels/force_state.py states the rules).

    logits [B, V] for the requests in `rows` [B] (int64 rows of the tables); `given` = (t_u, t_m)
    computed elsewhere (the top-k / top-p pre-pass) instead of sampling here. Updates the tables'
    state in place; returns the [NUM_RESULT, B] int64 step result. The specification the fused
    Triton kernel (s1/kernels/sampling.py) is tested against.

    Tensor parallelism: logits are this rank's vocabulary shard (the ids from `id_offset`) and
    `gather(t) -> [world, *t.shape]` all-gathers over the ranks: `sample_partials`, gather,
    `force_from_partials`; every rank returns the same result and updates its tables the same way.
    The full logits are never gathered."""
    from s1.kernels import force_state as fs

    if given is None and (gather is not None or id_offset):
        parts = sample_partials(logits, rows, tables, vocab_size, id_offset)
        given = reduce_partials(gather(parts) if gather is not None else parts[None])
    st, fp, forced, stop, think_end, newline = tables[:6]
    rules = fs.end_rules_of(tables)
    S = st[rows]                                                     # [B, NUM_COLS] (a copy)
    B = S.shape[0]
    if given is None:
        t_u, t_m = gumbel_argmax(logits, fp[rows, fs.INV_TEMP], S[:, fs.SEED], S[:, fs.OUT_COUNT],
                                 vocab_size, think_end)
    else:
        t_u, t_m = given
    ph, tu, wl, wu = S[:, fs.PHASE], S[:, fs.THINK_USED], S[:, fs.WAITS_LEFT], S[:, fs.WAITS_USED]
    kind, fpos, au, oc = S[:, fs.FORCE_KIND], S[:, fs.FORCE_POS], S[:, fs.ANSWER_USED], S[:, fs.OUT_COUNT]
    fin, last, mnext = S[:, fs.FINISH], S[:, fs.LAST_TOKEN], S[:, fs.MASK_NEXT]
    ext_len, delim_len = S[:, fs.FORCE_LEN + fs.F_EXT], S[:, fs.FORCE_LEN + fs.F_DELIM]
    fr = forced[rows]                                                # [B, 3, L]
    one = torch.ones_like(ph)

    # THINK: sample, or an end attempt -> extension / natural end
    thinking = ph == fs.THINK
    masked = (tu < S[:, fs.MIN_THINK]) | (mnext != 0)
    cand = torch.where(masked, t_m, t_u)
    r_id, r_prev, r_keep = rules[fs.RULE_ID], rules[fs.RULE_PREV], rules[fs.RULE_KEEP]
    match = (cand[:, None] == r_id[None, :]) & ((r_prev[None, :] < 0) | (last[:, None] == r_prev[None, :]))
    is_end = match.any(dim=1)
    keep = (match & (r_keep[None, :] != 0)).any(dim=1)
    pair = (match & (r_prev[None, :] >= 0)).any(dim=1) & ~keep
    attempt = thinking & is_end
    wait = attempt & (wl > 0)
    wait_text = wait & (ext_len > 0)
    wait_empty = wait & (ext_len == 0)
    to_answer = attempt & (wl == 0)
    off = pair.long()                                # a two-token end: F_DELIM[0] is already out
    tok = torch.where(wait_text & ~keep, fr[:, fs.F_EXT, 0], cand)
    tok = torch.where(wait_empty & ~keep, t_m, tok)
    delim_tok = fr[torch.arange(B, device=fr.device), fs.F_DELIM, off.clamp(max=fr.shape[2] - 1)]
    tok = torch.where(to_answer & ~keep, delim_tok, tok)
    wl = wl - wait.long()
    wu = wu + wait.long()
    tu = tu + (thinking & ~(to_answer & ~keep)).long() - (to_answer & pair).long()
    ext_force = wait_text & (keep | (ext_len > 1))
    delim_force = to_answer & (keep | (delim_len > off + 1))
    mnext = torch.where(thinking, ((wait_text & ~keep & ~ext_force) | (wait_empty & keep)).long(), mnext)
    new_ph = torch.where(ext_force | delim_force, fs.FORCE, ph)
    new_ph = torch.where(to_answer & ~delim_force, fs.ANSWER, new_ph)
    kind = torch.where(ext_force, fs.F_EXT, torch.where(delim_force, fs.F_DELIM, kind))
    start = torch.where(keep, 0, off + 1)            # next forced position
    fpos = torch.where(ext_force | delim_force, start, fpos)

    # FORCE: the next forced token
    forcing = ph == fs.FORCE
    kc = kind.clamp(0, 2)
    ftok = fr[torch.arange(B, device=fr.device), kc, fpos.clamp(0, fr.shape[2] - 1)]
    tok = torch.where(forcing, ftok, tok)
    tu = tu + (forcing & (kind == fs.F_EXT)).long()
    fdone = forcing & (fpos + 1 >= S.gather(1, (fs.FORCE_LEN + kc)[:, None])[:, 0])
    ext_done = fdone & (kind == fs.F_EXT)
    new_ph = torch.where(ext_done, fs.THINK, torch.where(fdone, fs.ANSWER, new_ph))
    mnext = torch.where(ext_done, one, mnext)
    fpos = torch.where(forcing, fpos + 1, fpos)

    # ANSWER: sample; a stop id ends the request
    answering = ph == fs.ANSWER
    tok = torch.where(answering, t_u, tok)
    stop_hit = answering & (t_u[:, None] == stop[rows]).any(dim=1)
    au = au + answering.long()
    new_ph = torch.where(stop_hit, fs.DONE, new_ph)
    fin = torch.where(stop_hit, fs.FIN_STOP, fin)

    done_before = ph == fs.DONE
    tok = torch.where(done_before, pad_id, tok)
    oc = oc + (~done_before).long()
    last = torch.where(done_before, last, tok)

    # limits reached
    cap = ((new_ph == fs.THINK) | ((new_ph == fs.FORCE) & (kind == fs.F_EXT))) & (tu >= S[:, fs.MAX_THINK])
    skip = ((S[:, fs.END_SKIP_NL] != 0) & (newline[last] != 0)).long()
    new_ph = torch.where(cap, fs.FORCE, new_ph)
    kind = torch.where(cap, fs.F_END, kind)
    fpos = torch.where(cap, skip, fpos)
    new_ph = torch.where(cap & (fpos >= S[:, fs.FORCE_LEN + fs.F_END]), fs.ANSWER, new_ph)
    ans_done = (new_ph == fs.ANSWER) & (au >= S[:, fs.MAX_ANSWER])
    fin = torch.where(ans_done, fs.FIN_ANSWER_LEN, fin)
    new_ph = torch.where(ans_done, fs.DONE, new_ph)
    tok_done = (new_ph != fs.DONE) & (oc >= S[:, fs.MAX_TOKENS])
    fin = torch.where(tok_done, fs.FIN_MAX_TOKENS, fin)
    new_ph = torch.where(tok_done, fs.DONE, new_ph)

    for c, v in ((fs.PHASE, new_ph), (fs.THINK_USED, tu), (fs.WAITS_LEFT, wl), (fs.WAITS_USED, wu),
                 (fs.FORCE_KIND, kind), (fs.FORCE_POS, fpos), (fs.ANSWER_USED, au), (fs.OUT_COUNT, oc),
                 (fs.FINISH, fin), (fs.LAST_TOKEN, last), (fs.MASK_NEXT, mnext)):
        S[:, c] = v
    st[rows] = S
    return torch.stack([tok, (~done_before).long(), (new_ph == fs.DONE).long(), fin, tu, wu, new_ph])
