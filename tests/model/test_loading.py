"""Checkpoint I/O: round trips, transformers interop, sharding, and specific errors."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from s1 import kernels
from s1.model.config import ConfigError, Qwen2Config
from s1.model.loading import CheckpointError, load_model, save_model, save_state_dict
from tests.hf_utils import random_hf_model


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_ckpt(request, tmp_path_factory):
    hf = random_hf_model(seed=7, tie_word_embeddings=request.param)
    d = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(d)
    return hf, d


IDS = torch.tensor([[3, 99, 7, 250, 11, 400, 5]])


def test_load_hf_checkpoint_matches_transformers(hf_ckpt):
    hf, d = hf_ckpt
    m = load_model(d, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(m(IDS), hf(IDS).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_save_load_round_trip_exact(hf_ckpt, tmp_path, dtype):
    _, d = hf_ckpt
    m = load_model(d, dtype=dtype)
    save_model(m, tmp_path)
    m2 = load_model(tmp_path)
    assert next(m2.parameters()).dtype == dtype
    for (n, a), (_, b) in zip(m.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), n


def test_transformers_loads_what_we_save(hf_ckpt, tmp_path):
    import transformers
    hf, d = hf_ckpt
    m = load_model(d, dtype=torch.float32)
    save_model(m, tmp_path)
    hf_cfg = transformers.AutoConfig.from_pretrained(tmp_path)   # our spelling, read by the installed release
    assert (_hf_rope_theta(hf_cfg), _hf_dtype(hf_cfg)) == (m.config.rope_theta, "float32") == (1e6, "float32")
    hf2 = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf2(IDS).logits, m(IDS), rtol=1e-5, atol=1e-5)


def _hf_rope_theta(hf_cfg) -> float:
    """The RoPE base a transformers config holds: rope_parameters (5.x) or rope_theta (4.x)."""
    rp = getattr(hf_cfg, "rope_parameters", None) or {}
    return rp.get("rope_theta", getattr(hf_cfg, "rope_theta", None))


def _hf_dtype(hf_cfg) -> str:
    d = getattr(hf_cfg, "dtype", None) or getattr(hf_cfg, "torch_dtype", None)
    return str(d).removeprefix("torch.")


def test_sharded_save_and_load(hf_ckpt, tmp_path):
    import transformers
    hf, d = hf_ckpt
    m = load_model(d, dtype=torch.float32)
    save_model(m, tmp_path, max_shard_size="200KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 2 and os.path.exists(tmp_path / "model.safetensors.index.json")
    m2 = load_model(tmp_path)
    for (n, a), (_, b) in zip(m.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), n
    hf2 = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf2(IDS).logits, hf(IDS).logits, rtol=1e-5, atol=1e-5)


def test_random_checkpoint_is_the_models_own_init(tmp_path):
    """save_random_checkpoint: a shape name and overrides, the model's init_weights (unit norms,
    zero biases, normal(0, std) matrices from the seed, std recorded in config.json), the
    config's dtype, shards; the same seed writes the same weights, another seed others."""
    from s1.model.config import shape_config
    from s1.model.loading import save_random_checkpoint
    from s1.model.qwen2 import Qwen2ForCausalLM
    kw = dict(hidden_size=32, intermediate_size=64, torch_dtype="float32")
    assert save_random_checkpoint(tmp_path / "a", "smoke", seed=1, std=0.05, **kw) == str(tmp_path / "a")
    a = load_model(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["initializer_range"] == 0.05
    ref = Qwen2ForCausalLM(shape_config("smoke", initializer_range=0.05, **kw))
    ref.init_weights(seed=1)
    for (n, p), (_, q) in zip(a.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n
    norm = a.model.layers[0].input_layernorm.weight
    assert torch.equal(norm, torch.ones_like(norm)) and not a.model.layers[0].self_attn.q_proj.bias.any()
    assert 0.04 < a.model.embed_tokens.weight.std().item() < 0.06
    save_random_checkpoint(tmp_path / "b", shape_config("smoke", **kw), seed=1, std=0.05, max_shard_size="40KB")
    assert len([f for f in os.listdir(tmp_path / "b") if f.endswith(".safetensors")]) > 2
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), load_model(tmp_path / "b").parameters()))
    save_random_checkpoint(tmp_path / "c", "smoke", seed=2, num_hidden_layers=1, torch_dtype="bfloat16")
    c = load_model(tmp_path / "c")
    assert c.config.num_hidden_layers == 1 and c.config.hidden_size == 64 and c.config.initializer_range == 0.02
    assert next(c.parameters()).dtype == torch.bfloat16
    save_random_checkpoint(tmp_path / "d", "smoke", seed=2, std=0.05, **kw)
    assert not torch.equal(load_model(tmp_path / "d").model.embed_tokens.weight, a.model.embed_tokens.weight)


def test_loads_transformers_sharded_checkpoint(tmp_path):
    hf = random_hf_model(seed=8, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    m = load_model(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(m(IDS), hf(IDS).logits, rtol=1e-5, atol=1e-5)


def _copy_ckpt(src, dst, edit):
    sd = load_file(os.path.join(src, "model.safetensors"))
    edit(sd)
    os.makedirs(dst, exist_ok=True)
    save_file(sd, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def test_error_missing_tensor(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    _copy_ckpt(d, tmp_path, lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(tmp_path)


def test_error_unexpected_tensor(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    _copy_ckpt(d, tmp_path, lambda sd: sd.__setitem__("model.layers.9.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*model\.layers\.9\.extra\.weight"):
        load_model(tmp_path)


def test_error_wrong_shape(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    _copy_ckpt(d, tmp_path, lambda sd: sd.__setitem__("model.layers.0.self_attn.k_proj.bias", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"k_proj\.bias has shape \(3,\).*implies \(64,\)"):
        load_model(tmp_path)


def test_error_config_disagrees_with_weights(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    _copy_ckpt(d, tmp_path, lambda sd: None)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 200
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape.*intermediate_size=200"):
        load_model(tmp_path)


def test_error_truncated_file(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    _copy_ckpt(d, tmp_path, lambda sd: None)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(corrupt|truncated)"):
        load_model(tmp_path)


def test_error_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_error_missing_shard(hf_ckpt, tmp_path):
    _, d = hf_ckpt
    m = load_model(d)
    save_model(m, tmp_path, max_shard_size="200KB")
    os.remove(sorted(tmp_path.glob("model-*.safetensors"))[1])
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path)


def test_config_validation_names_field():
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="hidden_size"):
        Qwen2Config(hidden_size=65, num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ConfigError, match="vocab_size"):
        Qwen2Config(vocab_size=0)
    with pytest.raises(ConfigError, match="torch_dtype"):
        Qwen2Config(torch_dtype="int8")


def test_config_reads_both_transformers_spellings():
    v4 = Qwen2Config.from_dict(dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                    rope_theta=5e5, torch_dtype="float16"))
    v5 = Qwen2Config.from_dict(dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                    rope_parameters={"rope_type": "default", "rope_theta": 5e5}, dtype="float16"))
    assert v4.rope_theta == v5.rope_theta == 5e5 and v4.dtype == v5.dtype == torch.float16
    assert v4.head_dim == 16


def test_real_qwen25_shapes_param_count():
    # Qwen2.5-0.5B: 494,032,768 parameters (tied); Qwen2.5-7B: 7,615,616,512 (untied).
    c05 = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                      intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)
    c7 = Qwen2Config(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                     intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False)
    assert c05.num_params() == 494_032_768
    assert c7.num_params() == 7_615_616_512
    with torch.device("meta"):
        from s1.model.qwen2 import Qwen2ForCausalLM
        assert sum(p.numel() for p in Qwen2ForCausalLM(c05).parameters()) == c05.num_params()


# ------------------------------------------------- config.json spellings: the RoPE base and dtype used

SPELLINGS = {   # config.json fields giving RoPE base 25,000 and dtype float16
    "transformers5": dict(rope_parameters={"rope_type": "default", "rope_theta": 25000.0}, dtype="float16"),
    "transformers4": dict(rope_theta=25000.0, rope_scaling=None, torch_dtype="float16"),
    # both, disagreeing: transformers 5 reads rope_parameters and dtype, and so do we
    "both": dict(rope_theta=1e6, torch_dtype="bfloat16",
                 rope_parameters={"rope_type": "default", "rope_theta": 25000.0}, dtype="float16"),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_loader_runs_the_rope_base_and_dtype_of_either_spelling(tmp_path, spelling):
    """A checkpoint whose config.json is spelled as transformers 5 writes it (rope_parameters, dtype),
    as transformers 4 does (rope_theta, torch_dtype), or both (disagreeing): load_model gives the
    parameters that dtype, and its logits are those of the same weights with that RoPE base, and
    not those with another base. The installed transformers reads the file the same way (the
    transformers-5 spelling only from transformers 5 on)."""
    import dataclasses
    from s1.model.qwen2 import Qwen2ForCausalLM
    theta = 25000.0   # neither our default (1e6) nor transformers' (1e4)
    src = Qwen2ForCausalLM(Qwen2Config(vocab_size=512, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=96, num_hidden_layers=2, max_position_embeddings=256,
                                       rope_theta=theta, torch_dtype="float32"))
    src.init_weights(seed=3)
    with torch.no_grad():
        for n, p in src.named_parameters():   # non-trivial biases: RoPE acts on q and k with them
            if n.endswith(".bias"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n)))
    save_model(src.eval(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for k in ("rope_theta", "rope_parameters", "rope_scaling", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    cfg.update(SPELLINGS[spelling])
    (tmp_path / "config.json").write_text(json.dumps(cfg))

    m = load_model(tmp_path)
    assert m.config.rope_theta == theta
    assert {p.dtype for p in m.parameters()} == {torch.float16}
    ids = torch.arange(40).remainder(500).add(7)[None]   # 40 positions: every RoPE frequency turns
    m32 = load_model(tmp_path, dtype=torch.float32)
    with torch.no_grad():
        got = m32(ids)
        assert torch.equal(got, src(ids))          # the same weights, built with this base
        for other in (1e4, 1e6):
            o = load_model(tmp_path, dtype=torch.float32, cfg=dataclasses.replace(m32.config, rope_theta=other))
            assert (o(ids) - got).abs().max() > 1e-3, other

    transformers = pytest.importorskip("transformers")
    if spelling in ("transformers5", "both") and int(transformers.__version__.split(".")[0]) < 5:
        return
    hf_cfg = transformers.AutoConfig.from_pretrained(tmp_path)
    assert (_hf_rope_theta(hf_cfg), _hf_dtype(hf_cfg)) == (theta, "float16")
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, got, rtol=1e-5, atol=1e-5)
