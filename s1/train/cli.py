"""`s1 train` / `python -m s1.train` / `torchrun --nproc-per-node 8 -m s1.train ...`.

Defaults are s1's recipe (s1 paper §D / its s1/train/sft.py): AdamW lr 1e-5, betas (0.9, 0.95), weight decay 1e-4,
5 epochs, global batch 16, 5% warmup then cosine, grad clip 1.0, block size 32768.
--model takes a checkpoint folder or a Hugging Face Hub id already in the local HF cache
(`hf download Qwen/Qwen2.5-32B-Instruct` fetches s1's base model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from s1.common import dtypes, profiling
from s1.common.cli import HelpFormatter
from s1.common.threads import add_threads_argument

PROG = "s1 train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, formatter_class=HelpFormatter, description=__doc__.split("\n\n")[0]
                                + "\n\n" + __doc__.split("\n\n", 1)[1].strip())
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint to fine-tune: an HF-format folder or a Hugging Face Hub id in "
                                     "the local HF cache (e.g. Qwen/Qwen2.5-32B-Instruct)")
    src.add_argument("--init-config", help="config.json for a randomly initialized model (train from scratch)")
    p.add_argument("--tokenizer", help="tokenizer folder or cached Hub id (default: the --model folder)")
    p.add_argument("--data", help="dataset: save_to_disk dir, .json/.jsonl/.parquet, or hub name (required)")
    p.add_argument("--out", help="output dir: HF export, checkpoints/, metrics.jsonl (required; shared by "
                                 "every node)")
    d = p.add_argument_group("data")
    d.add_argument("--block-size", type=int, default=32768, help="max tokens per sequence / packed block")
    d.add_argument("--pack", action="store_true", help="best-fit pack sequences into block-size blocks")
    d.add_argument("--overlong", choices=("truncate", "drop"), default="truncate",
                   help="what to do with examples longer than --block-size")
    d.add_argument("--split", default="train", help="dataset split to train on")
    d.add_argument("--thinking-column", help="default: thinking_trajectories, else deepseek_thinking_trajectory")
    d.add_argument("--attempt-column", help="default: attempt, else deepseek_attempt")
    d.add_argument("--system-prompt", help="default: the chat template's (Qwen's default system prompt)")
    d.add_argument("--thinking-format", choices=("auto", "s1", "think"), default="auto",
                   help="how an example is rendered: s1 = '<|im_start|>think\\n{thinking}\\n<|im_start|>answer\\n"
                        "Answer: {attempt}'; think = '<think>\\n{thinking}\\n</think>\\n\\n{attempt}' (R1-distill "
                        "and Qwen3 checkpoints); auto = think when the tokenizer has <think> and </think>")
    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=int, default=5, help="passes over the data")
    o.add_argument("--global-batch-size", type=int, default=16, help="sequences (or packed blocks) per step")
    o.add_argument("--micro-batch-size", type=int, default=1, help="sequences (or blocks) per forward per rank")
    o.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (AdamW)")
    o.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95), metavar=("B1", "B2"), help="AdamW betas")
    o.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    o.add_argument("--warmup-ratio", type=float, default=0.05,
                   help="fraction of the steps with linear warmup (then cosine to 0)")
    o.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 disables clipping")
    o.add_argument("--loss-weighting", choices=("token", "sequence"), default=None,
                   help="sequence: s1's per-sequence mean (each sequence its own mean, also packed or several per "
                        "micro-batch); token: "
                        "mean over all trained tokens of the global batch; default: the trainer's "
                        "(TrainConfig.loss_weighting)")
    o.add_argument("--max-steps", type=int, help="cap the number of steps (the schedule follows it)")
    o.add_argument("--stop-after", type=int, help="stop after this step (saving a checkpoint) without "
                                                  "changing the schedule; continue later with --resume")
    o.add_argument("--seed", type=int, default=42, help="seed of the data order and of a random init")
    o.add_argument("--init-seed", type=int, help="random-init seed with --init-config (default: --seed)")
    s = p.add_argument_group("systems")
    s.add_argument("--dtype", default="auto", type=dtypes.arg_type(True), metavar="{" + ",".join(dtypes.CHOICES) + "}",
                   help="compute dtype (also fp32/bf16/fp16; auto: bfloat16 on CUDA, float32 on CPU); "
                        "master weights and optimizer state are always float32")
    s.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per decoder layer")
    s.add_argument("--device", help="default: cuda:LOCAL_RANK if available, else cpu")
    s.add_argument("--peak-tflops", type=float, help="device peak for MFU when not auto-detected")
    add_threads_argument(s)
    s.add_argument("--plan", nargs="?", const="", metavar="SHAPE",
                   help="print the per-GPU memory plan and exit (no training): of SHAPE (0.5B ... 32B) or of "
                        "--model / --init-config, at --block-size x --micro-batch-size tokens, --grad-ckpt")
    s.add_argument("--plan-world", type=int, default=16, help="ranks sharding the model, for --plan")
    s.add_argument("--plan-gpu-gib", type=float, default=79.6,
                   help="usable GPU memory for --plan (an '80 GB' H100 has 79.6 GiB)")
    c = p.add_argument_group("checkpoints and logs")
    c.add_argument("--save-every", type=int, default=0, help="sharded checkpoint every N steps (0: none)")
    c.add_argument("--keep-checkpoints", type=int, default=1, help="how many recent checkpoints to keep")
    c.add_argument("--resume", nargs="?", const="latest", choices=("latest", "auto"), default=None,
                   help="--resume: continue from the latest complete checkpoint in --out (an error without "
                        "one); --resume auto: continue if there is one, else start at step 0 (one command for "
                        "the first launch and every requeue). Without it a used --out is refused")
    c.add_argument("--overwrite", action="store_true",
                   help="start a new run in a used --out (the earlier metrics.jsonl is kept as "
                        "metrics.jsonl.N.prev; the earlier checkpoints go once the new run has saved one)")
    c.add_argument("--dist-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="process-group timeout: how long a rank waits in a collective while another loads, "
                        "saves or exports (a rank that dies is noticed sooner: its connections close)")
    c.add_argument("--no-export", action="store_true", help="skip the final HF-format export")
    c.add_argument("--export-dtype", type=dtypes.arg_type(False), metavar="{" + ",".join(dtypes.NAMES) + "}",
                   help="dtype of the exported weights (default: the config's torch_dtype)")
    c.add_argument("--metrics-file", help="default: OUT/metrics.jsonl")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    profiling.add_arguments(p)
    return p


class UsageError(ValueError):
    """A flag names something that is not there: the message names the flag."""


def _resolve(a: argparse.Namespace) -> None:
    """--model / --tokenizer as cached Hub ids -> their folders (before anything heavy loads)."""
    from s1.common.hub import ModelNotFound, resolve_model_path
    try:
        if a.model:
            a.model = resolve_model_path(a.model, "--model")
        if a.tokenizer:
            a.tokenizer = resolve_model_path(a.tokenizer, "--tokenizer")
    except ModelNotFound as e:
        raise UsageError(str(e)) from None
    if a.tokenizer and not os.path.isfile(os.path.join(a.tokenizer, "tokenizer.json")):
        raise UsageError(f"--tokenizer {a.tokenizer}: no tokenizer.json in it")
    if not a.tokenizer and a.model and not os.path.isfile(os.path.join(a.model, "tokenizer.json")):
        raise UsageError(f"--model {a.model}: no tokenizer.json in it; pass --tokenizer DIR "
                         f"(a folder with the model's tokenizer.json)")
    if a.init_config and not a.tokenizer:
        raise UsageError("--init-config needs --tokenizer DIR (a folder with tokenizer.json)")


def _parse(argv: list[str] | None):
    """-> (TrainConfig, the parsed flags); s1.train.loop is imported here, so `--help` loads no torch."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.plan is not None:
        return None, a
    if not (a.model or a.init_config):
        p.error("one of the arguments --model --init-config is required")
    for flag in ("data", "out"):
        if getattr(a, flag) is None:
            p.error(f"the following arguments are required: --{flag}")
    for name in ("block_size", "epochs", "global_batch_size", "micro_batch_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(a, name)})")
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads {a.threads}: must be >= 1")
    try:
        profiling.check_arguments(a)
    except ValueError as e:
        p.error(str(e))
    _resolve(a)
    from s1.train.loop import TrainConfig
    extra = {} if a.loss_weighting is None else {"loss_weighting": a.loss_weighting}
    try:
        cfg = TrainConfig(
            data=a.data, out=a.out, model=a.model, init_config=a.init_config, tokenizer=a.tokenizer,
            block_size=a.block_size, pack=a.pack, overlong=a.overlong, split=a.split,
            thinking_column=a.thinking_column, attempt_column=a.attempt_column, system_prompt=a.system_prompt,
            thinking_format=a.thinking_format,
            epochs=a.epochs, global_batch_size=a.global_batch_size, micro_batch_size=a.micro_batch_size,
            lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay, warmup_ratio=a.warmup_ratio,
            max_grad_norm=a.max_grad_norm, max_steps=a.max_steps,
            stop_after=a.stop_after, seed=a.seed, init_seed=a.init_seed, dtype=a.dtype, grad_ckpt=a.grad_ckpt,
            device=a.device, peak_tflops=a.peak_tflops, save_every=a.save_every,
            keep_checkpoints=a.keep_checkpoints, resume={None: False, "latest": True, "auto": "auto"}[a.resume],
            overwrite=a.overwrite, dist_timeout_s=a.dist_timeout, export=not a.no_export,
            export_dtype=a.export_dtype, metrics_file=a.metrics_file, progress=not a.no_progress, **extra)
    except ValueError as e:
        p.error(_flagify(str(e)))
    return cfg, a


def parse_args(argv: list[str] | None = None):
    """`s1 train` flags -> TrainConfig."""
    return _parse(argv)[0]


def _flagify(msg: str) -> str:
    """TrainConfig field names in a message -> the flags ('lr=-1 must be >= 0' -> '--lr -1 must ...')."""
    import re
    fields = {a.dest for a in build_parser()._actions if a.option_strings}
    return re.sub(r"\b([a-z_]+)=", lambda m: f"--{m.group(1).replace('_', '-')} " if m.group(1) in fields
                  else m.group(0), msg)


def _model_config(cfg) -> dict | None:
    """config.json of the model to train (for the thread policy), or None."""
    src = cfg.init_config if cfg.init_config is not None else os.path.join(cfg.model, "config.json")
    if isinstance(src, dict):
        return src
    if hasattr(src, "to_dict"):
        return src.to_dict()
    try:
        with open(src) as f:
            return json.load(f)
    except (OSError, ValueError, TypeError):
        return None


def _threads_device(cfg) -> str:
    if cfg.device:
        return cfg.device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _plan(a) -> int:
    """`s1 train --plan [SHAPE]`: the memory plan; exit 0 when it fits, 1 when it does not."""
    from s1.model.config import SHAPES, Qwen2Config, shape_config
    from s1.train.plan import format_plan
    if a.plan:
        if a.plan not in SHAPES:
            print(f"{PROG}: error: --plan {a.plan}: unknown shape; one of {', '.join(SHAPES)}", file=sys.stderr)
            return 2
        mcfg, label = shape_config(a.plan), f"Qwen2.5-{a.plan} shape"
    elif a.model or a.init_config:
        try:
            if a.model:
                from s1.common.hub import resolve_model_path
                a.model = resolve_model_path(a.model, "--model")
            mcfg = Qwen2Config.from_pretrained(a.model or a.init_config)
        except Exception as e:  # noqa: BLE001 - a usage error
            print(f"{PROG}: error: --plan: {e}", file=sys.stderr)
            return 2
        label = a.model or a.init_config
    else:
        print(f"{PROG}: error: --plan needs a SHAPE, --model or --init-config", file=sys.stderr)
        return 2
    seqs = 1 if (a.loss_weighting == "token" or (not a.pack and a.micro_batch_size == 1)) else a.micro_batch_size
    text, fits = format_plan(mcfg, a.plan_world, a.block_size * a.micro_batch_size, a.plan_gpu_gib,
                             grad_ckpt=a.grad_ckpt, seqs=seqs, label=label)
    print(text)
    return 0 if fits else 1


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, a = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if cfg is None:
        return _plan(a)
    from s1.common.threads import configure_threads
    try:
        configure_threads(a.threads, work_hint=_model_config(cfg), device=_threads_device(cfg))
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from s1.train.loop import TrainingDiverged, train
    try:
        with profiling.session_from_args(a, "train"):
            train(cfg)
    except TrainingDiverged as e:
        print(f"{PROG}: training diverged: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {_flagify(str(e))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
