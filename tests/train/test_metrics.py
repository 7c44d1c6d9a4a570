"""Training FLOPs for the MFU (s1/train/metrics.py): the formula by hand, and its dense part
against torch's FlopCounterMode."""
import pytest
import torch


def _qwen_cfg(tied: bool):
    from s1.model.config import Qwen2Config
    return Qwen2Config.from_dict(dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                                      torch_dtype="float32"))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_train_flops_by_hand(tied):
    """hidden 64, 2 layers, 4 heads x 16, 2 kv heads, intermediate 128, vocab 256; two sequences
    of 5 and 7 tokens packed. Counted (PaLM appendix B / torchtitan): every matmul weight,
    lm_head included even when tied (it is a [T, 64] x [64, 256] matmul either way), the
    embedding lookup excluded (a gather), norms and biases excluded (not matmuls, negligible)."""
    from s1.train.metrics import dense_params, train_flops
    cfg = _qwen_cfg(tied)
    q, k, v, o = 64 * 64, 64 * 32, 64 * 32, 64 * 64  # 4 heads x 16 = 64; 2 kv heads x 16 = 32
    mlp = 3 * 64 * 128  # gate, up, down
    lm_head = 256 * 64
    n = 2 * (q + k + v + o + mlp) + lm_head
    assert n == 2 * (12288 + 24576) + 16384 == 90112
    assert dense_params(cfg) == n
    # Per layer and sequence of s tokens, forward: QK^T is s x s x 16 multiply-adds per head
    # (2 s^2 16 FLOPs), PV the same: 4 s^2 H d for full attention, 2 s^2 H d causal; forward +
    # backward = 3x. Per sequence, not per packed block: no attention across the two sequences.
    attn_fwd_causal = sum(2 * 2 * s * s * 4 * 16 / 2 for s in (5, 7))  # 9472 per layer
    want = 6 * n * 12 + 3 * 2 * attn_fwd_causal
    assert want == 6488064 + 56832 == 6544896
    assert train_flops(cfg, [5, 7]) == want
    assert train_flops(cfg, [12]) == 6 * n * 12 + 3 * 2 * 2 * 2 * 144 * 64 / 2 != want  # one 12-token sequence


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_dense_flops_equal_torch_flop_counter(tied):
    """Independent check of 6 N T: torch's FlopCounterMode over a real forward + backward of our
    model (fused linear cross-entropy loss) counts exactly 6 * dense_params * tokens in matmuls
    (aten.mm / addmm; the CPU attention kernel is not among its counted ops, and that part is
    checked by hand above). Untied counts the same: the lm_head matmul happens either way."""
    from torch.utils.flop_counter import FlopCounterMode
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.train.metrics import dense_params
    cfg = _qwen_cfg(tied)
    m = Qwen2ForCausalLM(cfg)
    m.init_weights(seed=0)
    g = torch.Generator().manual_seed(0)
    ids, labels = torch.randint(0, 256, (12,), generator=g), torch.randint(0, 256, (12,), generator=g)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    with FlopCounterMode(display=False) as fc:
        m(ids, cu_seqlens=cu, max_seqlen=7, labels=labels).backward()
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    assert sum(v for k, v in counts.items() if k in ("aten.mm", "aten.addmm")) == 6 * dense_params(cfg) * 12
    # what dense_params counts == the weights of the model's matmuls (lm_head is the embedding when tied)
    lin = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    assert lin + (cfg.vocab_size * cfg.hidden_size if tied else 0) == dense_params(cfg)
