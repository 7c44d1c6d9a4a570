"""Qwen3 dense in our one model code path, against transformers' Qwen3ForCausalLM on random weights:
fp32 logits (tied and untied, head_dim != hidden / heads), greedy tokens of our engine vs
transformers' greedy generate, HF checkpoint import / export round trips, the config rules and the
published shapes, the Triton kernels (q/k norm through the same rms_norm) in the interpreter."""
import json

import pytest
import torch

from s1 import kernels
from s1.model.config import SHAPES, ConfigError, Qwen2Config, shape_config
from s1.model.loading import CheckpointError, load_model, save_model, save_random_checkpoint
from s1.model.qwen2 import Identity, Qwen2ForCausalLM, RMSNorm
from tests.hf_utils import our_config_from_hf, random_hf_qwen3
from tests.helpers import VOCAB, in_interpreter, make_llm, prompts_of

pytestmark = pytest.mark.usefixtures("torch_backend")

CONFIGS = {
    # name: overrides of random_hf_qwen3 (hidden 64, 2 layers)
    "tied_gqa2_hd32": dict(tie_word_embeddings=True),                                  # 4 x 32 = 128 != 64
    "untied_gqa4_hd16": dict(tie_word_embeddings=False, num_attention_heads=8, num_key_value_heads=2,
                             head_dim=16),                                              # 8 x 16 = 128 != 64
    "untied_mha_hd8": dict(tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=4,
                           head_dim=8),                                                 # 4 x 8 = 32 < 64
}


def ours_from(hf) -> Qwen2ForCausalLM:
    m = Qwen2ForCausalLM(our_config_from_hf(hf))
    params = dict(m.named_parameters())
    sd = hf.state_dict()
    assert set(params) == set(sd) - ({"lm_head.weight"} if m.config.tie_word_embeddings else set())
    m.load_state_dict({k: v for k, v in sd.items() if k in params}, strict=True)
    return m.float().eval()


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_qwen3_fp32(name):
    hf = random_hf_qwen3(seed=11, **CONFIGS[name])
    ours = ours_from(hf)
    cfg = ours.config
    assert cfg.model_type == "qwen3" and cfg.qk_norm and not cfg.attention_bias
    assert cfg.head_dim == CONFIGS[name].get("head_dim", 32) != cfg.hidden_size // cfg.num_attention_heads
    a = ours.model.layers[0].self_attn
    assert isinstance(a.q_norm, RMSNorm) and a.q_norm.weight.shape == (cfg.head_dim,) and a.q_proj.bias is None
    ids = torch.randint(0, 512, (2, 29), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids).logits
        out = ours(ids)
        err = rel_err(out, ref)
        assert err <= 1e-5, f"{name}: max relative error {err:.2e}"
        # the q/k norms matter: without them the logits are far off (the check can fail)
        a.q_norm.weight.mul_(1.5)
        assert rel_err(ours(ids), ref) > 1e-3


def test_qwen2_keeps_no_qk_norm_and_its_biases():
    cfg = shape_config("smoke")
    a = Qwen2ForCausalLM(cfg).model.layers[0].self_attn
    assert isinstance(a.q_norm, Identity) and isinstance(a.k_norm, Identity) and a.q_proj.bias is not None
    assert not any("q_norm" in n for n, _ in Qwen2ForCausalLM(cfg).named_parameters())
    assert "attention_bias" not in cfg.to_dict()   # Qwen2's config.json is unchanged


@pytest.fixture(scope="module")
def qwen3_ckpt(tmp_path_factory, tok):
    """A transformers Qwen3 with the real vocabulary size (hidden 64, head_dim 32), saved by HF.
    Untied: this tiny tied one repeats one token forever from 2 of the 3 prompts."""
    hf = random_hf_qwen3(seed=5, std=0.08, vocab_size=VOCAB, max_position_embeddings=512, tie_word_embeddings=False)
    d = tmp_path_factory.mktemp("tiny_qwen3")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return hf, d


def test_engine_greedy_equals_transformers_generate(qwen3_ckpt, tok):
    """Our paged engine (prefill + decode through the KV cache) on the loaded HF Qwen3 checkpoint
    generates transformers' greedy tokens, token for token."""
    hf, d = qwen3_ckpt
    model = load_model(d, dtype=torch.float32)
    assert model.config.model_type == "qwen3"
    prompts = prompts_of([3, 9, 17], seed=4)
    suppress = list(range(tok.vocab_size, VOCAB))  # padded rows: never sampled by the engine
    refs = []
    for p in prompts:
        g = hf.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, eos_token_id=None,
                        pad_token_id=0, suppress_tokens=suppress)
        refs.append(g[0, len(p):].tolist())
    assert len({tuple(r) for r in refs}) == len(refs) and all(len(set(r)) > 1 for r in refs)
    from s1.infer import SamplingParams
    outs = make_llm(model, tok).generate(prompts, SamplingParams(max_tokens=10, ignore_eos=True), use_tqdm=False)
    assert [o.output_token_ids for o in outs] == refs


def test_hf_checkpoint_round_trip(qwen3_ckpt, tmp_path):
    """HF-saved Qwen3 -> our loader (every tensor equal) -> our export -> transformers loads it as
    Qwen3ForCausalLM with the same logits, and our loader reloads it identically."""
    import transformers
    hf, d = qwen3_ckpt
    ours = load_model(d, dtype=torch.float32)
    hsd = hf.state_dict()
    for n, p in ours.named_parameters():
        assert torch.equal(p, hsd[n]), n
    save_model(ours, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert cfg["attention_bias"] is False and cfg["head_dim"] == 32
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(back).__name__ == "Qwen3ForCausalLM"
    ids = torch.randint(0, 1000, (1, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-5, atol=1e-5)
    again = load_model(tmp_path / "out")
    assert again.config == ours.config
    assert all(torch.equal(p, q) for p, q in zip(again.parameters(), ours.parameters()))
    # bf16 export too: transformers reads the dtype we write
    save_model(ours, tmp_path / "bf16", dtype=torch.bfloat16)
    assert load_model(tmp_path / "bf16").model.layers[1].self_attn.k_norm.weight.dtype == torch.bfloat16


def test_random_qwen3_checkpoint_loads_in_transformers(tmp_path):
    """save_random_checkpoint("qwen3-smoke"): the model's own init (unit q/k norms, no biases),
    loadable by transformers with our logits."""
    import transformers
    path = save_random_checkpoint(tmp_path / "r", "qwen3-smoke", seed=3, std=0.05, vocab_size=640,
                                  torch_dtype="float32")
    ours = load_model(path)
    a = ours.model.layers[0].self_attn
    assert ours.config.head_dim == 32 and torch.equal(a.k_norm.weight, torch.ones(32)) and a.v_proj.bias is None
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert type(hf).__name__ == "Qwen3ForCausalLM"
    ids = torch.randint(0, 640, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(ours(ids), hf(ids).logits) <= 1e-5


def test_qwen3_checkpoint_errors(qwen3_ckpt, tmp_path):
    """A Qwen3 checkpoint lacking a q_norm is refused by name; a Qwen2 checkpoint's biases are
    unexpected tensors of a Qwen3 config."""
    from safetensors.torch import load_file, save_file
    _, d = qwen3_ckpt
    sd = load_file(d / "model.safetensors")
    (tmp_path / "a").mkdir()
    save_file({k: v for k, v in sd.items() if k != "model.layers.1.self_attn.q_norm.weight"},
              tmp_path / "a" / "model.safetensors")
    (tmp_path / "a" / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) model.layers.1.self_attn.q_norm.weight"):
        load_model(tmp_path / "a")
    sd["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(128)
    save_file(sd, tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*qwen3.*q_proj.bias"):
        load_model(tmp_path / "a")


def test_qwen3_config_rules():
    c = Qwen2Config.from_dict(dict(model_type="qwen3", hidden_size=64, num_attention_heads=4, num_key_value_heads=2))
    assert c.head_dim == 128 and c.attention_bias is False and c.architectures == ["Qwen3ForCausalLM"]
    assert Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2).head_dim == 16  # qwen2
    with pytest.raises(ConfigError, match="attention_bias"):
        Qwen2Config(model_type="qwen3", attention_bias=True)
    with pytest.raises(ConfigError, match="model_type"):
        Qwen2Config(model_type="llama")
    assert Qwen2Config.from_dict(c.to_dict()) == c


def test_published_qwen3_shapes():
    """The shape table's Qwen3 entries: the published sizes (model cards: 0.6B has 0.44B
    non-embedding parameters, 8B 6.95B, 32B 31.2B; Qwen3-0.6B totals 596,049,920), the meta model
    has exactly num_params() parameters, and heads * head_dim differs from hidden where published."""
    names = [n for n in SHAPES if n.startswith("qwen3-") and n != "qwen3-smoke"]
    assert names == ["qwen3-0.6B", "qwen3-1.7B", "qwen3-4B", "qwen3-8B", "qwen3-14B", "qwen3-32B"]
    cfg = {n: shape_config(n) for n in names}
    assert cfg["qwen3-0.6B"].num_params() == 596_049_920
    for n, non_emb in (("qwen3-0.6B", 0.44e9), ("qwen3-1.7B", 1.4e9), ("qwen3-4B", 3.6e9), ("qwen3-8B", 6.95e9),
                       ("qwen3-14B", 13.2e9), ("qwen3-32B", 31.2e9)):
        got = cfg[n].num_params(include_embedding=False)
        assert abs(got - non_emb) / non_emb < 0.01, (n, got)
    for n, c in cfg.items():
        assert c.model_type == "qwen3" and c.head_dim == 128 and c.max_position_embeddings == 40960
        assert c.tie_word_embeddings == (n in ("qwen3-0.6B", "qwen3-1.7B", "qwen3-4B"))
    assert [c.q_size != c.hidden_size for c in cfg.values()] == [True, False, True, False, False, True]
    with torch.device("meta"):
        m = Qwen2ForCausalLM(cfg["qwen3-0.6B"])
    assert sum(p.numel() for p in m.parameters()) == cfg["qwen3-0.6B"].num_params()


def check_triton_qwen3_forward() -> None:
    """The Triton backend (interpreter) on a tiny Qwen3: q/k norms through the same rms_norm
    kernel ([T, heads, head_dim] rows), prefill logits equal the torch backend's."""
    import s1.kernels.triton_ops as tops
    hf = random_hf_qwen3(seed=9, tie_word_embeddings=False)
    ours = ours_from(hf)
    ids = torch.randint(0, 512, (23,), generator=torch.Generator().manual_seed(1))
    calls = []
    orig = tops.rms_norm

    def rms_norm(x, w, eps):
        calls.append(tuple(x.shape))
        return orig(x, w, eps)

    tops.rms_norm = rms_norm
    try:
        with torch.no_grad():
            with kernels.use_backend("torch"):
                ref = ours(ids)
            with kernels.use_backend("triton"):
                out = ours(ids)
    finally:
        tops.rms_norm = orig
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert calls.count((23, 4, 32)) == 2 and calls.count((23, 2, 32)) == 2, calls  # q and k norm per layer
    print("Qwen3 forward on Triton kernels == torch backend")


def test_triton_backend_runs_qwen3():
    in_interpreter(check_triton_qwen3_forward)
