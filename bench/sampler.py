"""Per-step cost of sampling + budget forcing: the fused Triton kernel (`sample_and_force`, one
pass over the logits + one rules pass) vs the torch path (its reference: ~70 small ops), at batch
1, 32 and 256 over Qwen2.5's 151,936-id vocabulary, greedy and sampled rows, every request with
budget-forcing rules (thinking cap, "Wait" x2, a minimum).

On a GPU each path is timed eagerly (launches included) and replayed from a CUDA graph (what the
engine's decode step does); microseconds per step, medians of triton.testing.do_bench.

    python -m bench.sampler                # GPU
    python -m bench.sampler --smoke        # CPU: the torch path only, small vocabulary
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def tables_for(torch, B, V, device, sampled: bool):
    from s1.infer.budget import BudgetState, RequestRules, SpecialTokens
    from s1.kernels import reference
    sp = SpecialTokens(think_end_ids=[V - 20, V - 19, V - 18], answer_stop_ids=[V - 19, V - 18],
                       delimiter_ids=[V - 20, 100], newline_id=198, pad_id=V - 18, vocab_size=V - 10,
                       newline_table=bytes(1 if i == 198 else 0 for i in range(V - 10)))
    st = BudgetState(B, sp, device, reference)
    rules = [RequestRules(max_think=1 << 20, min_think=10, num_wait=2, extension_ids=[500], end_ids=[198, 1, 2, 3],
                          end_skip_newline=True, stop_ids=[V - 19, V - 18], temperature=0.7 if sampled else 0.0,
                          seed=i) for i in range(B)]
    st.admit(list(range(B)), rules)
    return st.tables, sp


def run(args) -> dict:
    import torch

    from s1.kernels import reference
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    V = 1024 if args.smoke else 151936
    batches = [1, 32] if args.smoke else [1, 32, 256]
    impls = {"torch": reference.sample_and_force}
    if dev.type == "cuda":
        from s1.kernels import triton_ops
        impls["fused"] = triton_ops.sample_and_force
    rows = []
    for sampled in (False, True):
        for B in batches:
            tables, sp = tables_for(torch, B, V, dev, sampled)
            logits = torch.randn(B, V, device=dev)
            rws = torch.arange(B, device=dev)
            for name, fn in impls.items():
                snapshot = tables.state.clone()

                def step():
                    tables.state.copy_(snapshot)       # same state every repetition
                    return fn(logits, rws, tables, sp.vocab_size, sp.pad_id)
                row = {"impl": name, "batch": B, "sampled": sampled}
                if dev.type == "cuda":
                    import triton.testing
                    row["eager_us"] = round(1e3 * triton.testing.do_bench(step, warmup=25, rep=200), 1)
                    g = torch.cuda.CUDAGraph()
                    step()
                    torch.cuda.synchronize()
                    with torch.cuda.graph(g):
                        step()
                    row["graph_us"] = round(1e3 * triton.testing.do_bench(g.replay, warmup=25, rep=200), 1)
                else:
                    step()
                    t = time.perf_counter()
                    n = 3
                    for _ in range(n):
                        step()
                    row["eager_us"] = round(1e6 * (time.perf_counter() - t) / n, 1)
                rows.append(row)
                print(f"{name:5s} batch {B:3d} {'sampled' if sampled else 'greedy '}: "
                      + ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_us")), file=sys.stderr, flush=True)
    return {"vocab": V, "device": str(dev), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, small vocabulary, torch path only")
    ap.add_argument("--json", default=None, help="results file (default bench/results/sampler.json on GPU)")
    args = ap.parse_args(argv)
    res = run(args)
    from s1.common.env import environment
    res["env"] = environment()
    cols = ["impl", "batch", "sampled", "eager_us", "graph_us"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in res["rows"]:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    print(json.dumps({"bench": "sampler", "rows": res["rows"]}))
    path = args.json or (None if args.smoke else "bench/results/sampler.json")
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
