"""bench/decode.py: the smoke run of its budget-forcing workload (3), and the same workload in
process, token by token, on conftest.py's tiny checkpoint."""
import json
import os
import subprocess
import sys

import pytest

from s1.infer import SamplingParams
from tests.conftest import ROOT
from tests.helpers import make_llm


def test_bench_decode_smoke_budget_workload():
    """`python -m bench.decode --smoke --preset qwen3 --skip-hf --rounds 1`: the Qwen3 CPU stand-in
    ("qwen3-smoke": q/k norms, head_dim 32 != 64 / 4), one round: workload (3) gives every sequence
    exactly 2 forced extensions and exactly its thinking budget (the script asserts it in smoke
    mode). The Qwen2.5 stand-in runs the same code (`--smoke`); its workload (3) is checked in
    process below, and its model by test_bench_decode_presets_and_usage_errors."""
    env = {k: v for k, v in os.environ.items() if k != "S1_KERNELS"}
    r = subprocess.run([sys.executable, "-m", "bench.decode", "--smoke", "--skip-hf", "--preset", "qwen3",
                        "--rounds", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads(r.stdout.strip().splitlines()[-1])
    (row,) = record["results"]
    assert row["model"] == "qwen3-smoke"
    assert row["min_waits"] == row["max_waits"] == 2 and row["avg_waits"] == 2.0
    assert row["exact_budget"] is True
    assert row["budget_tokens"] == row["offline_tokens"] == sum(nano_lens())
    assert len(row["offline_tok_s_rounds"]) == 1
    assert "4/4 sequences used exactly 2 waits, 4/4 thought exactly their budget" in r.stderr
    # the Qwen3 stand-in's KV cache: 2 layers x 2 KV heads x head_dim 32 x (k, v) x 4 bytes (fp32)
    assert row["kv_bytes_per_token"] == 2 * 2 * 32 * 2 * 4


def nano_lens():
    from bench.decode import nano_vllm_workload
    return nano_vllm_workload(4, 20, 30)[1]


def test_bench_decode_presets_and_usage_errors(capsys):
    """--preset picks the models (qwen3: Qwen3-0.6B); the workload is nano-vllm's (its published
    256-sequence run decodes 133,966 tokens); unknown shapes and big shapes under --smoke exit 2."""
    import torch

    from bench.decode import PRESETS, main, nano_vllm_workload, random_model, without_qk_norm
    from s1.model.config import SHAPES, shape_config
    assert PRESETS["qwen3"]["models"] == "qwen3-0.6B"
    c = shape_config(PRESETS["qwen3"]["models"])
    assert (c.model_type, c.hidden_size, c.num_attention_heads, c.head_dim, c.qk_norm) == ("qwen3", 1024, 16, 128, True)
    assert sum(nano_vllm_workload()[1]) == 133_966
    for name, family in ((PRESETS["qwen2.5"]["smoke"], "qwen2"), (PRESETS["qwen3"]["smoke"], "qwen3")):
        m = random_model(SHAPES[name], torch.device("cpu"), torch.float32)
        assert m.config.model_type == family and m.config.max_position_embeddings == 32768
        assert (m.model.layers[0].self_attn.q_proj.bias is None) == (family == "qwen3")
    # --qk-norm-cost's variant: the same model without its q/k norm parameters
    n_norm = sum("_norm." in n for n, _ in m.named_parameters())
    assert n_norm == 2 * m.config.num_hidden_layers
    assert not any("_norm." in n for n, _ in without_qk_norm(m).named_parameters())
    for argv, msg in ((["--smoke", "--models", "qwen3-0.6B"], "tiny CPU stand-ins only"),
                      (["--models", "qwen3-7B"], "unknown shape(s) qwen3-7B"),
                      (["--preset", "llama"], "invalid choice")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.usefixtures("torch_backend")
def test_bench_budget_workload_waits_land_where_designed(model, tok):
    """bench.decode workload (3) in process, token by token: the 2 "Wait"s sit exactly at the
    forced end-attempt positions of the last 2 periods of thinking, thinking is exactly the
    budget, then the forced end text and the capped answer (same length as the plain run)."""
    from bench.decode import StopAttempts, budget_forcing_params, nano_vllm_workload
    period = 4
    prompts, out_lens = nano_vllm_workload(3, 20, 30)
    params = budget_forcing_params(tok, out_lens, period)
    llm = make_llm(StopAttempts(model, tok.token_id("<|im_end|>"), period, tok), tok)
    outs = llm.generate(prompts, params, use_tqdm=False)
    wait, end = tok.encode("Wait"), tok.encode(tok.thinking_format.forced_end)
    assert len(wait) == 1
    for p, o, sp, n in zip(prompts, outs, params, out_lens):
        B = sp.max_thinking_tokens
        assert B >= 2 * period and sp.min_thinking_tokens == B - 2 * period and sp.num_wait == 2
        attempts = [j for j in range(B - 2 * period, B) if (len(p) + j) % period == 0]
        assert len(attempts) == 2
        out = o.output_token_ids
        assert [j for j in range(B) if out[j] == wait[0]] == attempts
        assert o.num_waits_used == 2 and o.num_thinking_tokens == B
        assert out[B:B + len(end)] == end and len(out) == n and o.finish_reason == "length"
