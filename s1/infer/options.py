"""What the engine's front ends share when they turn flags into an engine: `s1 generate`
(s1/infer/cli.py) and `s1 serve` (s1/serve/cli.py).

    resolve_inputs(model, tokenizer)  --model / --tokenizer -> folders + config.json, checked
    resolve_device(name)              --device auto|cpu|cuda[:N] -> a device this machine has
    request_seed(seed, i)             request i's seed under --seed (or a request's "seed" field)
    UsageError                        a bad flag value or path; the message names the flag

Pure Python at import (torch loads inside `resolve_device` only), so `--help` stays fast.
"""
from __future__ import annotations

import hashlib
import json
import os


class UsageError(ValueError):
    """A bad flag value or path: the message names the flag."""


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` under --seed `seed`: a hash, so neighbouring requests (and
    neighbouring --seed values) get unrelated noise streams."""
    h = hashlib.sha256(f"s1-generate|{seed}|{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2          # < 2**62, the engine's seed range


def resolve_inputs(model: str, tokenizer: str | None = None) -> tuple[str, str, dict]:
    """(model folder, tokenizer folder, config.json dict) from --model and --tokenizer (each a
    folder or a cached Hub id; the tokenizer defaults to the model's folder); UsageError naming
    --model / --tokenizer."""
    from s1.common.hub import ModelNotFound, resolve_model_path
    try:
        model_dir = resolve_model_path(model, "--model")
        tok_dir = resolve_model_path(tokenizer, "--tokenizer") if tokenizer else model_dir
    except ModelNotFound as e:
        raise UsageError(str(e)) from None
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise UsageError(f"--model {model}: no config.json in {model_dir} (not an HF-format checkpoint)")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--model {model}: unreadable config.json ({e})") from None
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        if tokenizer:
            raise UsageError(f"--tokenizer {tokenizer}: no tokenizer.json in {tok_dir}")
        raise UsageError(f"--model {model}: no tokenizer.json in {model_dir}; pass --tokenizer DIR "
                         f"(a folder with the model's tokenizer.json, e.g. the base model's)")
    return model_dir, tok_dir, cfg


def resolve_device(name: str) -> str:
    """'auto' -> cuda/cpu; a CUDA device on a build or machine without one -> UsageError."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise UsageError(f"--device {name}: this torch build ({torch.__version__}) has no CUDA support; "
                             f"use --device cpu or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is visible "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {name}: the engine runs on cpu or cuda")
    return name


# ------------------------------------------------------------------ the thinking format
# One set of flags on `s1 generate`, `s1 eval` and `s1 serve` (s1/model/thinking.py). They set the
# tokenizer's thinking format before the engine is built: the end-of-thinking ids live in the
# device tables, so they are per engine (the server's requests may change the start, the forced end
# and the answer prefix; see s1/serve/protocol.py).
THINKING_FLAGS = ("thinking_format", "thinking_start", "thinking_end", "thinking_stops", "forced_end",
                  "answer_prefix")


def add_thinking_format_args(parser) -> None:
    g = parser.add_argument_group(
        "thinking format", "how thinking starts and ends (default: detected from the tokenizer: s1's "
        "<|im_start|>think / <|im_start|>answer, or <think> / </think> when the tokenizer has those tokens)")
    g.add_argument("--thinking-format", choices=("auto", "s1", "think"), default="auto",
                   help="auto: detect; s1: <|im_start|>think ... <|im_start|>answer; think: <think>\\n ... </think> "
                        "(DeepSeek-R1-distill, Qwen3)")
    g.add_argument("--thinking-start", default=None, metavar="TEXT",
                   help="appended to the chat-template prompt to open thinking (s1's thinking_start)")
    g.add_argument("--thinking-end", default=None, metavar="TEXT",
                   help="written after a natural end of thinking (s1's thinking_end, e.g. '<|im_start|>answer')")
    g.add_argument("--thinking-stops", default=None, metavar="A,B",
                   help="comma-separated end-of-thinking strings the model writes, one or two tokens each "
                        "(s1's until_thinking, e.g. '<|im_start|>0,<|im_end|>'); they are dropped")
    g.add_argument("--forced-end", default=None, metavar="TEXT",
                   help="forced at the thinking cap (default: '\\n' + thinking end + answer prefix; "
                        "s1: '\\n<|im_start|>answer\\nFinal Answer:', think: '\\n</think>\\n\\n')")
    g.add_argument("--answer-prefix", default=None, metavar="TEXT",
                   help="what follows the thinking end in the default forced end (s1: '\\nFinal Answer:')")


def _unescape(v):
    return None if v is None else v.encode("utf-8").decode("unicode_escape") if "\\" in v else v


def apply_thinking_format(tok, a, base=None):
    """Set tok.thinking_format from the parsed flags (backslash escapes such as \\n are read);
    UsageError naming the flag. `base`: a ThinkingFormat to start from instead of the preset
    --thinking-format names (s1 eval's s1-style step-conditional run)."""
    from s1.model import thinking
    stops = getattr(a, "thinking_stops", None)
    over = dict(start=_unescape(getattr(a, "thinking_start", None)), end=_unescape(getattr(a, "thinking_end", None)),
                stops=None if stops is None else tuple(_unescape(s) for s in stops.split(",") if s),
                forced_end=_unescape(getattr(a, "forced_end", None)),
                answer_prefix=_unescape(getattr(a, "answer_prefix", None)))
    try:
        fmt = (base.with_overrides(**over) if base is not None
               else thinking.resolve(tok, getattr(a, "thinking_format", "auto") or "auto", **over))
        fmt.stop_rules(tok)                         # every stop one or two tokens
    except ValueError as e:
        raise UsageError(f"--thinking-*: {e}") from None
    tok.thinking_format = fmt
    return fmt
