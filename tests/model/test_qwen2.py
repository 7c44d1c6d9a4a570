"""Our Qwen2 forward vs HF transformers' Qwen2ForCausalLM on the same random weights."""
import pytest
import torch

from s1 import kernels
from s1.model.qwen2 import Qwen2ForCausalLM
from tests._lib_helpers import ContiguousKVCache
from tests.hf_utils import our_config_from_hf, random_hf_model

CONFIGS = {
    # name: (hidden, heads, kv_heads, tied)   head_dim = hidden // heads
    "tied_gqa2_hd32": (128, 4, 2, True),
    "untied_mha_hd64": (256, 4, 4, False),       # GQA 1:1
    "tied_gqa6_hd128": (768, 6, 1, True),        # GQA 6:1, head_dim 128 (Qwen2.5 >= 1.5B)
    "untied_gqa7_hd64": (448, 7, 1, False),      # GQA 7:1, head_dim 64 (Qwen2.5-0.5B: 14/2)
}


def ours_from(hf, dtype=torch.float32):
    m = Qwen2ForCausalLM(our_config_from_hf(hf))
    sd = {k: v for k, v in hf.state_dict().items() if k in dict(m.named_parameters())}
    m.load_state_dict(sd, strict=True)
    return m.to(dtype).eval()


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_fp32(name):
    hidden, heads, kv, tied = CONFIGS[name]
    hf = random_hf_model(seed=1, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                         tie_word_embeddings=tied, intermediate_size=hidden + 64)
    ours = ours_from(hf)
    assert ours.config.head_dim == hidden // heads
    ids = torch.randint(0, 512, (2, 37), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids).logits
        out = ours(ids)
    err = rel_err(out, ref)
    assert err <= 1e-5, f"{name}: max relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_bf16_within_rounding_of_fp32(name):
    hidden, heads, kv, tied = CONFIGS[name]
    hf = random_hf_model(seed=2, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                         tie_word_embeddings=tied, intermediate_size=hidden + 64)
    ids = torch.randint(0, 512, (1, 53), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref32 = hf(ids).logits
        hf_bf16_err = rel_err(hf.to(torch.bfloat16)(ids).logits, ref32)
        hf.float()
        ours_err = rel_err(ours_from(hf, torch.bfloat16)(ids), ref32)
    # bf16 keeps 8 mantissa bits (2^-8 ~ 4e-3 relative per rounding); our error must be of the
    # same size as transformers' own bf16 error (measured ratio 0.93-1.11 over these configs).
    assert ours_err <= 1.5 * hf_bf16_err, (ours_err, hf_bf16_err)
    assert ours_err > 1e-4  # it really ran in bf16


def test_packed_equals_separate():
    hf = random_hf_model(seed=3, num_attention_heads=4, num_key_value_heads=1)
    ours = ours_from(hf)
    g = torch.Generator().manual_seed(2)
    lens = [5, 17, 1, 11]
    seqs = [torch.randint(0, 512, (n,), generator=g) for n in lens]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    with torch.no_grad():
        packed = ours(torch.cat(seqs), cu_seqlens=cu)
        for i, s in enumerate(seqs):
            alone = ours(s)
            torch.testing.assert_close(packed[cu[i]:cu[i + 1]], alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(alone, hf(s[None]).logits[0], rtol=1e-5, atol=1e-5)


def test_packed_loss_equals_sum_of_separate_losses():
    hf = random_hf_model(seed=4)
    ours = ours_from(hf)
    g = torch.Generator().manual_seed(3)
    lens = [9, 4, 13]
    seqs = [torch.randint(0, 512, (n,), generator=g) for n in lens]
    labels = [torch.cat([s[1:], torch.tensor([-100])]) for s in seqs]
    labels[1][:2] = -100
    cu = torch.tensor([0, 9, 13, 26], dtype=torch.int32)
    with torch.no_grad():
        packed = ours(torch.cat(seqs), cu_seqlens=cu, labels=torch.cat(labels))
        sep = sum(torch.nn.functional.cross_entropy(hf(s[None]).logits[0], l, reduction="sum", ignore_index=-100)
                  for s, l in zip(seqs, labels))
    torch.testing.assert_close(packed, sep, rtol=1e-5, atol=1e-5)


def test_incremental_decoding_with_cache_equals_full_forward():
    hf = random_hf_model(seed=5, num_attention_heads=4, num_key_value_heads=2)
    ours = ours_from(hf)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 512, (n,), generator=g) for n in (7, 3, 12)]
    cache = ContiguousKVCache(ours.config, num_slots=3, max_len=32, dtype=torch.float32)
    seqs = [p.tolist() for p in prompts]
    with torch.no_grad():
        # batched prefill of all prompts, then 6 batched decode steps; check every step's logits
        pos = cache.prepare([0, 1, 2], [len(p) for p in prompts])
        cu = torch.tensor([0, 7, 10, 22])
        logits = ours(torch.cat(prompts), positions=pos, kv_cache=cache, logits_indices=cu[1:] - 1)
        cache.advance()
        for step in range(6):
            for i, s in enumerate(seqs):
                full = hf(torch.tensor(s)[None]).logits[0, -1]
                torch.testing.assert_close(logits[i], full, rtol=1e-5, atol=1e-5)
                s.append(int(logits[i].argmax()))
            pos = cache.prepare([0, 1, 2], [1, 1, 1])
            logits = ours(torch.tensor([s[-1] for s in seqs]), positions=pos, kv_cache=cache)
            cache.advance()


def test_positions_required_with_cache():
    hf = random_hf_model(seed=6)
    ours = ours_from(hf)
    cache = ContiguousKVCache(ours.config, 1, 8)
    with pytest.raises(ValueError, match="positions"):
        ours(torch.tensor([1, 2]), kv_cache=cache)


@pytest.mark.parametrize("causal", [True, False])
def test_batched_reference_attention_equals_per_sequence(causal):
    from s1.kernels import reference
    g = torch.Generator().manual_seed(9)
    lq = [5, 1, 0, 17, 3]
    lk = [5, 9, 0, 17, 30]   # q_len < k_len: queries are the last positions (prefill over a cached prefix)
    Hq, Hk, D = 6, 2, 16
    q = torch.randn(sum(lq), Hq, D, generator=g, requires_grad=True)
    k = torch.randn(sum(lk), Hk, D, generator=g, requires_grad=True)
    v = torch.randn(sum(lk), Hk, D, generator=g, requires_grad=True)
    cu = lambda ls: torch.tensor([0] + list(torch.tensor(ls).cumsum(0)), dtype=torch.int32)  # noqa: E731
    args = (cu(lq), cu(lk), max(lq), max(lk), D ** -0.5, causal)
    a = reference.attention(q, k, v, *args)
    b = reference.attention_per_sequence(q, k, v, *args)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    dout = torch.randn_like(a)
    ga = torch.autograd.grad(a, (q, k, v), dout)
    gb = torch.autograd.grad(b, (q, k, v), dout)
    for x, y in zip(ga, gb):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
