"""Profile one training step of the demo's tiny model (issue 25): the SFT trainer's step (FSDP2,
one process) against the same model unwrapped and a plain PyTorch loop, on the same batch.

    python -m bench.demo_step --data DIR/curate/dataset --tokenizer DIR/tokenizer [--threads 1]
           [--batch 64] [--steps 30] [--system default|none]

Prints a markdown table (median step seconds over --steps after 5 warm-up steps) and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--system", default="default", help="default | none (the toy template without a system turn)")
    p.add_argument("--variants", default="fsdp,plain,plain_padded")
    a = p.parse_args(argv)

    import torch
    import torch.distributed as dist
    torch.set_num_threads(a.threads)
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.model.tokenizer import Tokenizer
    from s1.pipelines.toy import tiny_config
    from s1.train.data import BatchPlan, collate, load_rows, make_samples, tokenize_rows
    from s1.train.loop import TrainConfig, build_model, build_optimizer

    tok = Tokenizer.from_pretrained(a.tokenizer)
    if a.system == "none":
        tok.system_prompt = ""
    rows = load_rows(a.data)
    examples, stats = tokenize_rows(rows, tok, 256, progress=False)
    samples = make_samples(examples, 256, False)
    plan = BatchPlan(examples, samples, a.batch, a.batch, 1, 0)
    mbs = [plan.micro_batches(0, b, 0)[0] for b in range(a.steps + 5)]
    mcfg_d = tiny_config(tok.vocab_size)
    mcfg = Qwen2Config.from_dict(mcfg_d) if hasattr(Qwen2Config, "from_dict") else Qwen2Config(**{
        k: v for k, v in mcfg_d.items() if k in Qwen2Config.__dataclass_fields__})
    res = {"threads": a.threads, "batch": a.batch, "system": a.system,
           "tokens_per_step": statistics.mean(mb.n_tokens for mb in mbs),
           "trained_per_step": statistics.mean(mb.n_trained for mb in mbs),
           "load_avg_1m": os.getloadavg()[0]}

    def run(model, opt, step_fn):
        ts = []
        for i, mb in enumerate(mbs):
            t0 = time.perf_counter()
            step_fn(model, opt, mb)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts[5:])

    def ours(model, opt, mb):
        loss = model(mb.input_ids, cu_seqlens=mb.cu_seqlens, max_seqlen=mb.max_seqlen, labels=mb.labels)
        (loss / max(mb.n_trained, 1)).backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
        opt.step()
        opt.zero_grad(set_to_none=True)

    cfg = TrainConfig(data=rows, out="/tmp/_demo_step", init_config=mcfg_d, tokenizer=tok, global_batch_size=a.batch,
                      micro_batch_size=a.batch, loss_weighting="token", lr=3e-3, device="cpu", dtype="fp32")
    for v in a.variants.split(","):
        torch.manual_seed(0)
        if v == "fsdp":
            if not dist.is_initialized():
                dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
            model = build_model(cfg, mcfg, torch.device("cpu"), 0, 1, torch.float32)
            opt = build_optimizer(cfg, model, torch.device("cpu"))
            res[v] = run(model, opt, ours)
        elif v == "plain":      # same model, same ops, same optimizer: no FSDP wrapping
            model = Qwen2ForCausalLM(mcfg).float()
            model.init_weights(seed=0)
            opt = build_optimizer(cfg, model, torch.device("cpu"))
            res[v] = run(model, opt, ours)
        elif v == "plain_padded":   # a plain loop: padded [B, S] batch, materialized logits, F.cross_entropy
            model = Qwen2ForCausalLM(mcfg).float()
            model.init_weights(seed=0)
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3, foreach=True)
            pad = []
            for mb in mbs:
                lens = (mb.cu_seqlens[1:] - mb.cu_seqlens[:-1]).tolist()
                S = max(lens)
                ids = torch.zeros(len(lens), S, dtype=torch.long)
                lab = torch.full((len(lens), S), -100, dtype=torch.long)
                for j, (s0, n) in enumerate(zip(mb.cu_seqlens[:-1].tolist(), lens)):
                    ids[j, :n] = mb.input_ids[s0:s0 + n]
                    lab[j, :n] = mb.labels[s0:s0 + n]
                pad.append((ids, lab))
            it = iter(pad)

            def plain_step(model, opt, mb):
                ids, lab = next(it)
                # causal attention over the padded batch; padding sits at the end, so real tokens
                # never attend to it
                logits = model(ids)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=-100)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            res[v] = run(model, opt, plain_step)
    print("| variant | median step s |\n|---|---|")
    for v in a.variants.split(","):
        print(f"| {v} | {res[v]:.4f} |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
