"""Training-step throughput, MFU and peak memory: our trainer path vs transformers + torch AdamW.

World size 1 (one GPU), one sequence per step (s1's layout), random token ids, every token trained.
  ours: the trainer's own path (s1/train/parallelize.py: FSDP2 on a 1-rank mesh, bf16 compute with
        fp32 master weights via MixedPrecisionPolicy, optional per-layer activation checkpointing;
        model(..., labels=...) = fused linear cross-entropy, logits never materialized;
        AdamW fused, grad clipping 1.0) — exactly what `s1 train` runs per micro-batch.
  hf:   transformers Qwen2ForCausalLM (sdpa attention), fp32 parameters under
        torch.autocast(bf16), `gradient_checkpointing_enable()` when checkpointing, loss from
        `model(input_ids, labels=...)` (materializes the [S, 151936] logits), torch AdamW (fused).
Per row: tokens/s, achieved model TFLOP/s, MFU (s1/train/metrics.py: 6*N*tokens + causal attention,
recompute not counted; peak 989 TFLOP/s bf16 dense for H100/H200) and peak allocated memory.
Timing: 2 warm-up steps, then the median over --steps steps, each bracketed by CUDA events
(no host sync inside a step). Out-of-memory is recorded as OOM, not an error.

    python -m bench.train                      # 0.5B and 1.5B x 4K/16K/32K x ckpt on/off, ours + hf
    python -m bench.train --max-len 1.5B       # longest trainable sequence for 1.5B (ckpt on)
    python -m bench.train --smoke              # tiny model on CPU: checks the script, numbers meaningless
Writes a markdown table to stdout and bench/results/train.json (device, commit, versions, date); --smoke
writes into a temporary folder (printed) unless --out names another file: never over a recorded result.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

# model.config.SHAPES names, plus "tiny" (the smoke shape with a 1,024-token vocabulary)
SHAPE_NAMES = ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "tiny")


def model_config(shape: str):
    from s1.model.config import SHAPES, shape_config
    extra = dict(vocab_size=1024) if shape == "tiny" else {}
    name = "smoke" if shape == "tiny" else shape
    return shape_config(name, max_position_embeddings=131072,
                        max_window_layers=SHAPES[name]["num_hidden_layers"], **extra)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer:
    """CUDA events on GPU (no host sync inside the timed region), perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.pairs = []

    def start(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.pairs.append([e, None])
        else:
            self.pairs.append([time.perf_counter(), None])

    def stop(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.pairs[-1][1] = e
        else:
            self.pairs[-1][1] = time.perf_counter()

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in self.pairs]
        return [b - a for a, b in self.pairs]


def _batch(cfg, seq_len, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(cfg.vocab_size, 151643), (seq_len + 1,), generator=g)
    return ids[:-1].to(device), ids[1:].to(device)


def build_ours(cfg, device, grad_ckpt: bool, compute_dtype):
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.train.parallelize import build_mesh, parallelize
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    model.float()
    parallelize(model, build_mesh(device.type, 1),
                param_dtype=None if compute_dtype == torch.float32 else compute_dtype,
                reduce_dtype=torch.float32, grad_ckpt=grad_ckpt)
    model.to_empty(device=device)
    with torch.no_grad():  # random weights: values do not matter for speed
        for name, p in model.named_parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            local.fill_(1.0) if name.endswith("norm.weight") else local.normal_(0.0, 0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4,
                            **({"fused": True} if device.type == "cuda" else {}))
    return model, opt


def step_ours(model, opt, ids, labels):
    loss = model(ids, labels=labels) / ids.numel()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def build_hf(cfg, device, grad_ckpt: bool):
    import transformers
    hcfg = transformers.Qwen2Config(**{k: v for k, v in cfg.to_dict().items()
                                       if k not in ("torch_dtype", "architectures", "model_type")})
    hcfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.Qwen2ForCausalLM(hcfg).float()
    if grad_ckpt:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 spelling
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4,
                            **({"fused": True} if device.type == "cuda" else {}))
    return model, opt


def step_hf(model, opt, ids, labels, compute_dtype, device):
    # HF shifts labels inside the loss: pass the unshifted ids as labels.
    with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
        out = model(input_ids=ids[None], labels=ids[None])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss


def run_one(impl, shape, seq_len, grad_ckpt, device, steps, compute_dtype, peak) -> dict:
    from s1.train.metrics import train_flops
    cfg = model_config(shape)
    row = {"impl": impl, "shape": shape, "seq_len": seq_len, "grad_ckpt": grad_ckpt}
    model = opt = None
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if impl == "ours":
            model, opt = build_ours(cfg, device, grad_ckpt, compute_dtype)
            fn = lambda ids, lab: step_ours(model, opt, ids, lab)  # noqa: E731
        else:
            model, opt = build_hf(cfg, device, grad_ckpt)
            fn = lambda ids, lab: step_hf(model, opt, ids, lab, compute_dtype, device)  # noqa: E731
        ids, labels = _batch(cfg, seq_len, device)
        for _ in range(2):  # warm-up: allocator, Triton compile/autotune, optimizer state
            fn(ids, labels)
        _sync(device)
        timer = _Timer(device)
        for _ in range(steps):
            timer.start()
            loss = fn(ids, labels)
            timer.stop()
        secs = timer.seconds()
        t = statistics.median(secs)
        flops = train_flops(cfg, [seq_len])
        row.update(status="ok", step_s=t, tokens_per_s=seq_len / t, tflops=flops / t / 1e12,
                   mfu=(flops / t / peak) if peak else None, loss=float(loss.detach()))
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except torch.OutOfMemoryError:
        row.update(status="OOM")
    finally:
        del model, opt
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _fmt(row) -> str:
    if row["status"] != "ok":
        return (f"| {row['impl']} | {row['shape']} | {row['seq_len']} | {'on' if row['grad_ckpt'] else 'off'} "
                f"| {row['status']} | | | |")
    mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "n/a"
    mem = f"{row['peak_mem_gib']:.1f}" if "peak_mem_gib" in row else "n/a"
    return (f"| {row['impl']} | {row['shape']} | {row['seq_len']} | {'on' if row['grad_ckpt'] else 'off'} "
            f"| {row['tokens_per_s']:,.0f} | {row['tflops']:.1f} | {mfu} | {mem} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["0.5B", "1.5B"], choices=SHAPE_NAMES)
    ap.add_argument("--seq-lens", nargs="+", type=int, default=[4096, 16384, 32768])
    ap.add_argument("--impls", nargs="+", default=["ours", "hf"], choices=["ours", "hf"])
    ap.add_argument("--grad-ckpt", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--kernels", default="auto", choices=["auto", "torch", "triton"])
    ap.add_argument("--max-len", metavar="SHAPE", help="find the longest trainable sequence (ours, ckpt on)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, fp32: checks that the script runs")
    ap.add_argument("--out", default=None, help="default bench/results/train.json; with --smoke a temporary folder "
                    "(a smoke run never overwrites a recorded result)")
    a = ap.parse_args(argv)
    if a.smoke:
        from bench import smoke_output
        try:
            a.out = smoke_output("train_smoke_cpu.json", a.out)
        except ValueError as e:
            ap.error(str(e))
    elif a.out is None:
        a.out = "bench/results/train.json"

    import torch.distributed as dist

    from s1 import kernels
    from s1.common.env import environment
    from s1.train.metrics import peak_flops
    if a.smoke:
        device, compute_dtype = torch.device("cpu"), torch.float32
        a.shapes, a.steps = ["tiny"], 2
        if a.seq_lens == ap.get_default("seq_lens"):
            a.seq_lens = [64, 128]
    else:
        if not torch.cuda.is_available():
            print("bench.train: no CUDA device (use --smoke on CPU)", file=sys.stderr)
            return 2
        device, compute_dtype = torch.device("cuda", 0), torch.bfloat16
    if a.impls and "hf" in a.impls:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("bench.train: transformers not installed; skipping the hf rows", file=sys.stderr)
            a.impls = [i for i in a.impls if i != "hf"]
    if not dist.is_initialized():  # FSDP2 needs a process group: 1 rank, in-memory store
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)
    peak = peak_flops(device)
    rows = []
    header = ("| impl | model | seq len | grad ckpt | tokens/s | model TFLOP/s | MFU | peak mem GiB |\n"
              "|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    with kernels.use_backend(a.kernels):
        if a.max_len:
            lens = [32768, 49152, 65536, 81920, 98304, 131072] if not a.smoke else [128, 256]
            best = None
            for n in lens:
                r = run_one("ours", a.max_len, n, True, device, 1, compute_dtype, peak)
                rows.append(r)
                print(_fmt(r), flush=True)
                if r["status"] != "ok":
                    break
                best = n
            print(f"\nlongest trainable sequence for {a.max_len} (ours, ckpt on): {best}")
        else:
            for shape in a.shapes:
                for n in a.seq_lens:
                    for ck in a.grad_ckpt:
                        for impl in a.impls:
                            r = run_one(impl, shape, n, ck == "on", device, a.steps, compute_dtype, peak)
                            rows.append(r)
                            print(_fmt(r), flush=True)
    rec = {"bench": "train", "smoke": a.smoke, "kernels": kernels.backend_name(device) if a.kernels == "auto"
           else a.kernels, "peak_tflops": peak / 1e12 if peak else None, "rows": rows, **environment()}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(rec, f, indent=2)
    print(json.dumps({"bench": "train", "rows": len(rows), "out": a.out}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
