"""Engine checks that need the real device: greedy parity with near-tie accounting, and memory
released across engines.

(1) parity: the engine (paged KV cache, Triton kernels on CUDA, CUDA graphs, fp32) against naive
    full-recompute greedy decoding with the PyTorch reference ops (no cache, no graphs), on a
    4-layer width-256 random Qwen2 whose weights are scaled x8 (so the context decides the next
    token), 8 prompts x 40 tokens. At the first token where the two differ, the reference's gap
    between its top-2 logits is reported: a divergence counts as a mismatch only where that gap
    exceeds --tie-tol (a near tie can flip under different but correct summation orders).
(2) engines: create, use and close five engines in a row; allocated memory must come back to
    where it started (and the second engine must size its cache from a free GPU).

    python -m bench.engine_checks                 # GPU
    python -m bench.engine_checks --smoke         # CPU: the same checks, tiny sizes
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def tiny_model(torch, device, scale: float, layers: int, width: int, seed: int = 0, *,
               intermediate: int | None = None, max_positions: int = 1024, embed_scale: float = 1.0):
    """A tiny random Qwen2 with the real 151,936 vocabulary whose attention and MLP weights are
    scaled by `scale` (and the embedding by `embed_scale`), so that the context decides the next
    token (with the default init the model repeats its input token and a comparison proves
    nothing). Also the engine tests' model (tests/helpers.py context_model)."""
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=151936, hidden_size=width, intermediate_size=intermediate or 2 * width,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions, tie_word_embeddings=True, torch_dtype="float32")
    m = Qwen2ForCausalLM(cfg)
    m.init_weights(seed=seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "proj" in name and name.endswith("weight"):
                p.mul_(scale)
        m.model.embed_tokens.weight.mul_(embed_scale)
    return m.to(device).eval()


def parity(args, torch, tok, device) -> dict:
    import random

    from s1 import kernels
    from s1.infer import LLM, SamplingParams
    n_prompts, n_tokens = (3, 8) if args.smoke else (8, 40)
    layers, width = (2, 64) if args.smoke else (4, 256)
    m = tiny_model(torch, device, 8.0, layers, width)
    V = tok.vocab_size
    rng = random.Random(0)
    prompts = [[rng.randint(0, 150000) for _ in range(rng.randint(5, 40))] for _ in range(n_prompts)]
    with LLM(model=m, tokenizer=tok, device=device, max_model_len=256, max_num_seqs=16, page_size=16) as llm:
        outs = [o.output_token_ids for o in
                llm.generate(prompts, SamplingParams(max_tokens=n_tokens, ignore_eos=True), use_tqdm=False)]
        backend = llm.engine.ops.__name__
    rows = []
    with kernels.use_backend("torch"), torch.no_grad():
        for p, got in zip(prompts, outs):
            ids, first, gap = list(p), None, None
            for i in range(n_tokens):
                logits = m(torch.tensor(ids, device=device))[-1, :V].float()
                top2 = logits.topk(2)
                want = int(top2.indices[0])
                if first is None and got[i] != want:
                    first, gap = i, float(top2.values[0] - top2.values[1])
                    break
                ids.append(want)
            rows.append({"prompt_len": len(p), "first_diff": first, "ref_top2_gap": gap,
                         "mismatch": first is not None and gap > args.tie_tol})
    res = {"backend": backend, "prompts": n_prompts, "tokens": n_tokens, "tie_tol": args.tie_tol,
           "identical": sum(r["first_diff"] is None for r in rows),
           "near_tie_divergences": sum(r["first_diff"] is not None and not r["mismatch"] for r in rows),
           "mismatches": sum(r["mismatch"] for r in rows), "rows": rows}
    return res


def engines(args, torch, tok, device) -> dict:
    from s1.infer import LLM, SamplingParams
    m = tiny_model(torch, device, 1.0, 2, 64)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = torch.cuda.memory_allocated() if cuda else None
    per = []
    for i in range(5):
        t = time.perf_counter()
        kw = dict(model=m, tokenizer=tok, device=device, max_model_len=512, max_num_seqs=32)
        if not cuda:
            kw["num_pages"] = 64
        with LLM(**kw) as llm:
            out = llm.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
            assert len(out[0].output_token_ids) == 4
            pages = llm.num_pages
        if cuda:
            torch.cuda.synchronize()
        per.append({"engine": i + 1, "num_pages": pages, "seconds": round(time.perf_counter() - t, 2),
                    "allocated_after_close": torch.cuda.memory_allocated() if cuda else None})
    res = {"start_allocated": start, "engines": per}
    if cuda:
        res["released"] = all(r["allocated_after_close"] == start for r in per)
        res["same_cache_every_time"] = len({r["num_pages"] for r in per}) == 1
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_checks", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script works")
    ap.add_argument("--tie-tol", type=float, default=1e-3, help="top-2 logit gap below which a divergence is a tie")
    ap.add_argument("--json", default=None, help="results file (default bench/results/engine_checks.json on GPU)")
    args = ap.parse_args(argv)
    import torch

    from bench.standin import load_tokenizer
    from s1.common.env import environment
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("bench.engine_checks: no GPU; use --smoke", file=sys.stderr)
        return 2
    tok = load_tokenizer()
    out = {"bench": "engine_checks", "env": environment()}
    out["parity"] = p = parity(args, torch, tok, device)
    print(f"parity ({p['backend']}): {p['identical']}/{p['prompts']} identical, {p['near_tie_divergences']} "
          f"near-tie divergences (gap <= {p['tie_tol']}), {p['mismatches']} mismatches; "
          + ", ".join(f"diff@{r['first_diff']} gap {r['ref_top2_gap']:.2e}" for r in p["rows"] if r["first_diff"] is not None),
          flush=True)
    out["engines"] = e = engines(args, torch, tok, device)
    print("engines: " + "; ".join(f"#{r['engine']} {r['num_pages']} pages, {r['seconds']}s"
                                  + (f", allocated after close {r['allocated_after_close']}" if device.type == "cuda" else "")
                                  for r in e["engines"])
          + (f"; start {e['start_allocated']}, released: {e.get('released')}" if device.type == "cuda" else ""), flush=True)
    print(json.dumps({k: out[k] for k in ("parity", "engines")}))
    path = args.json or (None if args.smoke else "bench/results/engine_checks.json")
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    ok = p["mismatches"] == 0 and (device.type != "cuda" or e["released"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
