"""`s1 train` / `python -m train` / `torchrun --nproc-per-node 8 -m train ...`.

Defaults are s1's recipe (s1-reference §2): AdamW lr 1e-5, betas (0.9, 0.95), weight decay 1e-4,
5 epochs, global batch 16, 5% warmup then cosine, grad clip 1.0, block size 32768.
"""
from __future__ import annotations

import argparse
import sys

from train.loop import TrainConfig, TrainingDiverged, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 train", description="Supervised fine-tuning on s1K-format data "
                                "(FSDP2; launch with torchrun for more than one GPU).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF-format checkpoint directory to fine-tune")
    src.add_argument("--init-config", help="config.json for a randomly initialized model (train from scratch)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the --model directory)")
    p.add_argument("--data", required=True, help="dataset: save_to_disk dir, .json/.jsonl/.parquet, or hub name")
    p.add_argument("--out", required=True, help="output dir: HF export, checkpoints/, metrics.jsonl")
    d = p.add_argument_group("data")
    d.add_argument("--block-size", type=int, default=32768, help="max tokens per sequence / packed block")
    d.add_argument("--pack", action="store_true", help="best-fit pack sequences into block-size blocks")
    d.add_argument("--overlong", choices=("truncate", "drop"), default="truncate",
                   help="what to do with examples longer than --block-size")
    d.add_argument("--split", default="train")
    d.add_argument("--thinking-column", help="default: thinking_trajectories, else deepseek_thinking_trajectory")
    d.add_argument("--attempt-column", help="default: attempt, else deepseek_attempt")
    d.add_argument("--system-prompt", help="default: Qwen's default system prompt")
    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=int, default=5)
    o.add_argument("--global-batch-size", type=int, default=16, help="sequences (or packed blocks) per step")
    o.add_argument("--micro-batch-size", type=int, default=1, help="sequences (or blocks) per forward per rank")
    o.add_argument("--lr", type=float, default=1e-5)
    o.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    o.add_argument("--weight-decay", type=float, default=1e-4)
    o.add_argument("--warmup-ratio", type=float, default=0.05)
    o.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    o.add_argument("--loss-weighting", choices=("token", "sequence"), default="token",
                   help="token: mean over all trained tokens of the global batch; sequence: s1's "
                        "per-sequence mean (needs --micro-batch-size 1, no --pack)")
    o.add_argument("--max-steps", type=int, help="cap the number of steps (the schedule follows it)")
    o.add_argument("--stop-after", type=int, help="stop after this step (saving a checkpoint) without "
                                                  "changing the schedule; continue later with --resume")
    o.add_argument("--seed", type=int, default=42)
    o.add_argument("--init-seed", type=int, help="random-init seed with --init-config (default: --seed)")
    s = p.add_argument_group("systems")
    s.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="compute dtype (master weights and optimizer state are always fp32)")
    s.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per decoder layer")
    s.add_argument("--device", help="default: cuda:LOCAL_RANK if available, else cpu")
    s.add_argument("--peak-tflops", type=float, help="device peak for MFU when not auto-detected")
    c = p.add_argument_group("checkpoints and logs")
    c.add_argument("--save-every", type=int, default=0, help="sharded checkpoint every N steps (0: none)")
    c.add_argument("--keep-checkpoints", type=int, default=1)
    c.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    c.add_argument("--no-export", action="store_true", help="skip the final HF-format export")
    c.add_argument("--export-dtype", choices=("bf16", "fp16", "fp32"), help="default: the config's torch_dtype")
    c.add_argument("--metrics-file", help="default: OUT/metrics.jsonl")
    c.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("block_size", "epochs", "global_batch_size", "micro_batch_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(a, name)})")
    try:
        return TrainConfig(
            data=a.data, out=a.out, model=a.model, init_config=a.init_config, tokenizer=a.tokenizer,
            block_size=a.block_size, pack=a.pack, overlong=a.overlong, split=a.split,
            thinking_column=a.thinking_column, attempt_column=a.attempt_column, system_prompt=a.system_prompt,
            epochs=a.epochs, global_batch_size=a.global_batch_size, micro_batch_size=a.micro_batch_size,
            lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay, warmup_ratio=a.warmup_ratio,
            max_grad_norm=a.max_grad_norm, loss_weighting=a.loss_weighting, max_steps=a.max_steps,
            stop_after=a.stop_after, seed=a.seed, init_seed=a.init_seed, dtype=a.dtype, grad_ckpt=a.grad_ckpt,
            device=a.device, peak_tflops=a.peak_tflops, save_every=a.save_every,
            keep_checkpoints=a.keep_checkpoints, resume=a.resume, export=not a.no_export,
            export_dtype=a.export_dtype, metrics_file=a.metrics_file, progress=not a.no_progress)
    except ValueError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        train(cfg)
    except TrainingDiverged as e:
        print(f"s1 train: training diverged: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"s1 train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
