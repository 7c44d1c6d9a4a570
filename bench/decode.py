"""Decode benchmarks for the engine, random-weight Qwen2.5 or Qwen3 shapes, bf16, on one GPU.

(1) batch-1 decode: tok/s and achieved GB/s as % of the HBM bandwidth measured by a large
    device-to-device copy. A step reads every weight once plus the KV cache so far:
    bytes/step = weight bytes + context * kv_bytes_per_token (0.5B: 0.99 GB + 12,288 B/token).
    Decode time is isolated by differencing two runs (N_long vs N_short output tokens).
(2) nano-vllm's offline workload: 256 sequences, prompt and output lengths uniform in
    [100, 1024] (random.seed(0) as nano-vllm's bench.py), random token ids, EOS ignored;
    output tokens/s over the whole generate call (prefill included).
(3) the same with budget forcing active: every sequence thinks exactly its budget B
    (output length - 7 - 16: the forced "\\n<|im_start|>answer\\nFinal Answer:" is 7 tokens and
    the answer is capped at 16) with exactly 2 forced extensions. num_wait=2,
    max_thinking_tokens=B, min_thinking_tokens=B - 2P: a thin wrapper raises <|im_end|> to the top
    at every absolute position p with p % P == 0 (P = 32), so the model "tries to stop" every P
    tokens; attempts below the minimum are masked out (it keeps thinking), the last 2P thinking
    positions hold exactly 2 attempts, each replaced by "Wait", and the cap then forces the end
    (B >= 2P for every sequence). Same output token count as (2): the difference is the cost of
    the on-device state machine (masked sampling path included) and forced tokens. --smoke
    asserts waits == 2 and thinking == B for every sequence.
(2) and (3) run on one engine (the wrapper is inert for plain requests), warmed up with both, then
    alternated for --rounds rounds (default 5): the budget-forcing overhead is the median (and
    spread) of the per-round ratios of seconds per output token, and the plain rounds show whether
    throughput holds steady call after call (prompts repeat: prefix-cache revivals every call).
(4) transformers `generate` (static cache, SDPA, greedy) on the same GPU: batch-1 tok/s and
    workload (2) in left-padded batches (every sequence decodes the batch's longest output;
    only the requested tokens count). transformers is a test-only dependency (pip install -e
    ".[test]"): without it (4) is skipped with a note; (1)-(3) of each model are printed (and
    written to the JSON file) before (4) starts, so a failure there loses nothing.

    python -m bench.decode                     # GPU: 0.5B, 1.5B, 7B; HF side by side for 0.5B
    python -m bench.decode --models 0.5B --skip-hf
    python -m bench.decode --preset qwen3      # GPU: Qwen3-0.6B shapes (nano-vllm's and mini-sglang's
                                               # model), HF side by side for it
    python -m bench.decode --smoke             # CPU: tiny model, tiny workload (checks the script)
    python -m bench.decode --smoke --preset qwen3   # CPU: the tiny Qwen3 stand-in ("qwen3-smoke")
    python -m bench.decode --smoke --models smoke,qwen3-smoke --rounds 1   # CPU: both stand-ins

--qk-norm-cost runs every Qwen3 model a second time with its per-head q/k RMSNorms replaced by
Identity (row "<model> w/o q/k norm"): the step-time cost of the two norms, the most a fusion of
them into RoPE could win back.

Presets name the models (--models / --hf-models, overridable): "qwen2.5" (default) the Qwen2.5
shapes above; "qwen3" the Qwen3-0.6B shape (head_dim 128 with hidden 1024 / 16 heads, per-head
q/k RMSNorm, no q/k/v biases, tied embeddings). Workload (2) is exactly nano-vllm's bench.py
(256 sequences, 133,966 output tokens; nano-vllm samples at temperature 0.6, we decode greedily)
on the model both nano-vllm and mini-sglang publish their numbers for. Any name of
s1.model.config.SHAPES works in --models ("qwen3-1.7B", "qwen3-8B", ...).

Prints a markdown table and one JSON line; writes bench/results/decode.json (GPU; --preset qwen3:
decode_qwen3.json) with device, commit, versions and date.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time

import torch

from bench.standin import load_tokenizer
from s1.common import dtypes


def random_model(shape: dict, device, dtype, seed=0):
    """A random-weight Qwen2 / Qwen3 of `shape` (SHAPES entry) on `device`: the model's own init
    (HF's), drawn on the device (drawing on the CPU is too slow for 7B)."""
    import torch
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    cfg = Qwen2Config(**{"max_position_embeddings": 32768, **shape, "torch_dtype": dtypes.name_of(dtype)})
    with torch.device("meta"):
        m = Qwen2ForCausalLM(cfg)
    m.to(dtype).to_empty(device=device)
    with torch.no_grad():
        m.init_weights(seed=seed, device=device)
    return m.eval()


def hbm_bandwidth_gbs(device) -> float:
    """Achieved copy bandwidth (read + write) of a 1 GiB device-to-device copy, GB/s."""
    import torch
    import triton.testing
    a = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=5, rep=50)
    return 2 * a.numel() / (ms * 1e-3) / 1e9


class StopAttempts(torch.nn.Module):
    """Wraps the model: at absolute positions p with (p + 1) % period == 0 make <|im_end|> the argmax
    (a model 'trying to end thinking'): masked out below the thinking minimum, replaced by the
    extension while waits are left (workload (3)). Tokens whose text ends with a newline never win
    (so the forced end is always its full 7 tokens and (3) has exactly (2)'s token count). The
    engine calls it as it calls every model: model(ids, positions, kv_cache=..., logits_indices=...,
    ops=...)."""

    def __init__(self, model, token: int, period: int, tok):
        super().__init__()
        self.model, self.token, self.period = model, token, period
        self.config = model.config
        table = tok.newline_table() if hasattr(tok, "newline_table") else b""
        self.newline_ids = [i for i, b in enumerate(table) if b]

    def forward(self, input_ids, positions, kv_cache=None, logits_indices=None, **kw):
        logits = self.model(input_ids, positions, kv_cache=kv_cache, logits_indices=logits_indices, **kw)
        pos = positions if logits_indices is None else positions[logits_indices]
        hit = ((pos + 1) % self.period == 0)
        logits[:, self.token] = logits[:, self.token].masked_fill(hit, 1e4)
        if self.newline_ids:
            logits[:, self.newline_ids] = -1e4
        return logits


def budget_forcing_params(tok, out_lens, period: int):
    """Workload (3): per sequence of output length o, budget B = o - 7 - answer cap; exactly 2
    end attempts (positions p % period == 0, see StopAttempts) fall in the last 2*period thinking
    positions, where the minimum no longer masks them: each becomes "Wait" (num_wait=2), then the
    cap forces the end. Needs a one-token extension (an attempt inside a multi-token extension
    would be skipped) and B >= 2*period."""
    from s1.infer import SamplingParams
    from s1.model.tokenizer import FORCED_END
    end_len = len(tok.encode(FORCED_END))  # 7 forced tokens
    if len(tok.encode("Wait")) != 1:
        raise ValueError("workload (3) needs 'Wait' to be one token")
    params = []
    for o in out_lens:
        answer = min(16, o // 4)
        budget = o - end_len - answer
        if budget < 2 * period:
            raise ValueError(f"output length {o}: budget {budget} < 2 * period {period}")
        params.append(SamplingParams(max_thinking_tokens=budget, min_thinking_tokens=budget - 2 * period,
                                     num_wait=2, max_answer_tokens=answer, ignore_eos=True))
    return params


# --preset: default --models, --hf-models and the CPU smoke shape (names of s1.model.config.SHAPES)
PRESETS = {
    "qwen2.5": dict(models="0.5B,1.5B,7B", hf_models="0.5B", smoke="smoke", json="bench/results/decode.json"),
    "qwen3": dict(models="qwen3-0.6B", hf_models="qwen3-0.6B", smoke="qwen3-smoke",
                  json="bench/results/decode_qwen3.json"),
}


def nano_vllm_workload(n=256, lo=100, hi=1024, vocab=10000, seed=0):
    random.seed(seed)
    prompts = [[random.randint(0, vocab) for _ in range(random.randint(lo, hi))] for _ in range(n)]
    outs = [random.randint(lo, hi) for _ in range(n)]
    return prompts, outs


def sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_generate(llm, prompts, params, device):
    sync(device)
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    sync(device)
    return time.perf_counter() - t, outs


def without_qk_norm(m):
    """`m` with Qwen3's q/k norms replaced by the parameter-free Identity (Qwen2's): not Qwen3's
    math, the same work otherwise; --qk-norm-cost times it next to the real model, the cost the
    norms add to a decode step (what fusing them into RoPE could at most win back)."""
    from s1.model.qwen2 import Identity
    for layer in m.model.layers:
        layer.self_attn.q_norm = Identity()
        layer.self_attn.k_norm = Identity()
    return m


def bench_model(name, shape, device, dtype, args, tok, results, drop_qk_norm=False):
    import statistics

    import torch
    from s1.infer import LLM, SamplingParams
    from s1.infer.paged_cache import kv_bytes_per_token
    row = {"model": name}
    m = random_model(shape, device, dtype)
    if drop_qk_norm:
        m = without_qk_norm(m)
    weight_bytes = sum(p.numel() * p.element_size() for p in m.parameters())
    kv_tok = kv_bytes_per_token(m.config, dtype)
    row.update(weight_GB=weight_bytes / 1e9, kv_bytes_per_token=kv_tok)
    smoke = args.smoke
    max_len = 4096 if not smoke else 256
    kw = dict(tokenizer=tok, device=device, max_model_len=max_len, max_num_seqs=args.max_num_seqs,
              enforce_eager=args.eager)
    if smoke:
        kw.update(num_pages=512, page_size=16)

    # (1) batch-1 decode, differenced (its own engine, closed before the next one sizes its cache)
    prompt = [[random.Random(1).randint(0, 10000) for _ in range(128 if not smoke else 8)]]
    n_short, n_long = (64, 576) if not smoke else (4, 20)
    with LLM(model=m, **kw) as llm:
        timed_generate(llm, prompt, SamplingParams(max_tokens=n_short, ignore_eos=True), device)  # warm-up
        t_s, _ = timed_generate(llm, prompt, SamplingParams(max_tokens=n_short, ignore_eos=True), device)
        t_l, _ = timed_generate(llm, prompt, SamplingParams(max_tokens=n_long, ignore_eos=True), device)
    n = n_long - n_short
    dt = max(t_l - t_s, 1e-9)
    avg_ctx = len(prompt[0]) + (n_short + n_long) / 2
    bytes_step = weight_bytes + avg_ctx * kv_tok
    row.update(b1_tok_s=n / dt, b1_GB_s=n * bytes_step / dt / 1e9)
    if args.bandwidth:
        row["b1_pct_bw"] = 100 * row["b1_GB_s"] / args.bandwidth
        row["b1_roofline_tok_s"] = args.bandwidth * 1e9 / bytes_step

    # (2) + (3) on ONE engine whose model "tries to stop" every P positions (StopAttempts): plain
    # requests ignore it (plain generation, EOS ignored), forced ones turn it into 2 Waits. Both
    # engines' worth of work share the KV cache and the CUDA graphs; after warming up both
    # workloads, plain and forced calls alternate for --rounds rounds: the per-round overhead
    # ((forced s/token) / (plain s/token) - 1) has a median and a spread, and the plain calls show
    # whether throughput stays steady call after call.
    n_seq = 256 if not smoke else 4
    lo, hi = (100, 1024) if not smoke else (20, 30)  # smoke: budget >= 2 * 4
    prompts, out_lens = nano_vllm_workload(n_seq, lo, hi)
    plain = [SamplingParams(max_tokens=o, ignore_eos=True) for o in out_lens]
    period = 32 if not smoke else 4
    forced = budget_forcing_params(tok, out_lens, period)
    stop = StopAttempts(m, tok.token_id("<|im_end|>"), period, tok)
    with LLM(model=stop, **kw) as llm:
        timed_generate(llm, prompts[:2], plain[:2], device)  # warm-up (graphs, compile)
        timed_generate(llm, prompts[:2], forced[:2], device)
        plain_tps, forced_tps, overheads = [], [], []
        for r in range(args.rounds):
            t2, outs = timed_generate(llm, prompts, plain, device)
            n_out = sum(len(o.output_token_ids) for o in outs)
            assert n_out == sum(out_lens), (n_out, sum(out_lens))
            t3, outs3 = timed_generate(llm, prompts, forced, device)
            n_out3 = sum(len(o.output_token_ids) for o in outs3)
            plain_tps.append(n_out / t2)
            forced_tps.append(n_out3 / t3)
            overheads.append(100 * ((t3 / n_out3) / (t2 / n_out) - 1))
            print(f"bench.decode: {name} round {r + 1}: plain {plain_tps[-1]:.0f} tok/s, forced "
                  f"{forced_tps[-1]:.0f} tok/s, overhead {overheads[-1]:+.1f}%", file=sys.stderr, flush=True)
        waits = [o.num_waits_used for o in outs3]
        exact = [o.num_thinking_tokens == p.max_thinking_tokens for o, p in zip(outs3, forced)]
        row.update(offline_tok_s=statistics.median(plain_tps), offline_tok_s_rounds=plain_tps,
                   offline_tokens=n_out, preemptions=llm.stats["preemptions"], num_pages=llm.num_pages,
                   budget_tok_s=statistics.median(forced_tps), budget_tok_s_rounds=forced_tps,
                   budget_tokens=n_out3, budget_overhead_pct=statistics.median(overheads),
                   budget_overhead_spread_pct=[min(overheads), max(overheads)],
                   avg_waits=sum(waits) / len(waits), min_waits=min(waits), max_waits=max(waits),
                   exact_budget=all(exact))
    ok = row["min_waits"] == row["max_waits"] == 2 and row["exact_budget"] and n_out3 == n_out
    msg = (f"bench.decode: budget forcing workload: {sum(w == 2 for w in waits)}/{len(waits)} sequences "
           f"used exactly 2 waits, {sum(exact)}/{len(exact)} thought exactly their budget, "
           f"{n_out3} output tokens (plain workload: {n_out})")
    print(msg, file=sys.stderr)
    if smoke:
        assert ok, msg
    elif not ok:
        print("bench.decode: WARNING: workload (3) did not run as designed", file=sys.stderr)

    results.append(row)
    save(results, args)                          # our numbers are out before transformers runs
    # (4) transformers side by side
    if not args.skip_hf and not drop_qk_norm and (name in args.hf_models or smoke):
        try:
            row.update(bench_hf(m, shape, device, dtype, prompt, n_short, n_long, prompts, out_lens, args))
        except Exception as e:                   # noqa: BLE001 - (1)-(3) stand without it
            print(f"bench.decode: {name}: transformers side by side failed ({type(e).__name__}: {e}); "
                  f"the engine's numbers above stand", file=sys.stderr)
        else:
            save(results, args)
    del m
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_hf(m, shape, device, dtype, prompt, n_short, n_long, prompts, out_lens, args):
    import torch
    import transformers
    d = m.config.to_dict()  # the same architecture: Qwen2Config or Qwen3Config of transformers
    d.update(max_window_layers=m.config.num_hidden_layers, dtype=None)
    d.pop("torch_dtype", None)
    cfg = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device(device):
        hf = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    hf.load_state_dict(m.state_dict(), strict=False)
    hf.config._attn_implementation = "sdpa"
    out = {}

    def gen(ids, mask, n):
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                        cache_implementation="static" if device.type == "cuda" else None,
                        pad_token_id=0, eos_token_id=None)
        sync(device)
        return time.perf_counter() - t

    ids = torch.tensor(prompt, device=device)
    gen(ids, torch.ones_like(ids), n_short)
    t_s = gen(ids, torch.ones_like(ids), n_short)
    t_l = gen(ids, torch.ones_like(ids), n_long)
    out["hf_b1_tok_s"] = (n_long - n_short) / max(t_l - t_s, 1e-9)
    # workload (2) in left-padded batches
    bs = args.hf_batch if device.type == "cuda" else 4
    total_t, useful = 0.0, 0
    for i in range(0, len(prompts), bs):
        chunk, outs = prompts[i:i + bs], out_lens[i:i + bs]
        L = max(map(len, chunk))
        ids = torch.zeros(len(chunk), L, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for j, p in enumerate(chunk):
            ids[j, L - len(p):] = torch.tensor(p, device=device)
            mask[j, L - len(p):] = 1
        total_t += gen(ids, mask, max(outs))
        useful += sum(outs)
    out.update(hf_offline_tok_s=useful / total_t, hf_offline_s=total_t)
    del hf
    return out


def save(results: list[dict], args) -> None:
    """The latest model's row as a JSON line on stderr; the whole record to --json (GPU default
    bench/results/decode.json, --preset qwen3: decode_qwen3.json), rewritten after every part, so an
    interrupted run keeps its rows."""
    print(f"bench.decode: {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    path = args.json or (None if args.smoke else PRESETS[args.preset]["json"])
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(record_of(results, args), f, indent=2)


def record_of(results: list[dict], args) -> dict:
    return {"bench": "decode", "smoke": args.smoke, "bandwidth_GB_s": args.bandwidth, "results": results,
            **args.env}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5",
                    help="model family: its default --models / --hf-models and smoke shape (default qwen2.5)")
    ap.add_argument("--models", default=None, help="SHAPES names, comma-separated (default: the preset's)")
    ap.add_argument("--hf-models", default=None,
                    help="models also run with transformers generate (default: the preset's)")
    ap.add_argument("--hf-batch", type=int, default=64, help="transformers batch for workload (2)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--qk-norm-cost", action="store_true",
                    help="Qwen3 models: also run each with its q/k norms removed (their cost per step)")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny model and workload")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternated plain / budget-forcing rounds of workloads (2)+(3) (default 5; smoke 2)")
    ap.add_argument("--json", default=None,
                    help="default on GPU: bench/results/decode.json (--preset qwen3: decode_qwen3.json)")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.smoke else 5
    preset = PRESETS[args.preset]
    if args.smoke:  # the CPU stand-ins only ("smoke", "qwen3-smoke"): default the preset's
        args.models = args.models or preset["smoke"]
        big = [k for k in args.models.split(",") if not k.endswith("smoke")]
        if big:
            ap.error(f"--smoke runs the tiny CPU stand-ins only (smoke, qwen3-smoke), not {', '.join(big)}")
    args.models = args.models or preset["models"]
    args.hf_models = args.hf_models or preset["hf_models"]
    from s1.model.config import SHAPES
    unknown = [k for k in args.models.split(",") if k not in SHAPES]
    if unknown:
        ap.error(f"--models: unknown shape(s) {', '.join(unknown)}; one of {', '.join(SHAPES)}")

    import torch

    from s1.common.env import environment
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("bench.decode: no GPU available; use --smoke for the CPU check", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.hf_models = args.hf_models.split(",")
    if not args.skip_hf and importlib.util.find_spec("transformers") is None:
        print("bench.decode: transformers is not installed (a test-only dependency: pip install transformers, "
              "or pip install -e \".[test]\"); skipping the transformers side by side (4)", file=sys.stderr)
        args.skip_hf = True
    args.env = environment()
    args.bandwidth = hbm_bandwidth_gbs(device) if device.type == "cuda" else None
    tok = load_tokenizer()  # the Qwen2.5 tokenizer: Qwen3's vocabulary rows too (random ids < 10,000)
    shapes = {k: SHAPES[k] for k in args.models.split(",")}
    results = []
    for name, shape in shapes.items():
        print(f"bench.decode: {name} ...", file=sys.stderr)
        bench_model(name, shape, device, dtype, args, tok, results)
        if args.qk_norm_cost and shape.get("model_type") == "qwen3":
            print(f"bench.decode: {name} without q/k norm ...", file=sys.stderr)
            bench_model(f"{name} w/o q/k norm", shape, device, dtype, args, tok, results, drop_qk_norm=True)

    env = args.env
    cols = ["model", "b1_tok_s", "b1_GB_s", "b1_pct_bw", "offline_tok_s", "budget_tok_s",
            "budget_overhead_pct", "budget_overhead_spread_pct", "avg_waits", "hf_b1_tok_s", "hf_offline_tok_s"]
    print(f"\n{env['device']}, commit {env['commit']}, torch {env['torch']}, triton {env['triton']}"
          + (f", copy bandwidth {args.bandwidth:.0f} GB/s" if args.bandwidth else ""))
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                                for c in cols) + " |")
    print(json.dumps(record_of(results, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
