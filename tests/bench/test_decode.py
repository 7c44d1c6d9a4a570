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
    """`python -m bench.decode --smoke --skip-hf`: workload (3) gives every sequence exactly 2
    forced extensions and exactly its thinking budget (the script asserts it in smoke mode)."""
    env = {k: v for k, v in os.environ.items() if k != "S1_KERNELS"}
    r = subprocess.run([sys.executable, "-m", "bench.decode", "--smoke", "--skip-hf"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads(r.stdout.strip().splitlines()[-1])
    (row,) = record["results"]
    assert row["min_waits"] == row["max_waits"] == 2 and row["avg_waits"] == 2.0
    assert row["exact_budget"] is True
    assert row["budget_tokens"] == row["offline_tokens"]
    assert "4/4 sequences used exactly 2 waits, 4/4 thought exactly their budget" in r.stderr


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
