"""`s1 generate`: decode prompts with budget forcing and write one JSON line per prompt.

    s1 generate --model DIR (--prompt TEXT | --prompts FILE.jsonl) [--max-thinking-tokens N]
        [--min-thinking-tokens M] [--num-wait K] [--temperature T] [--seed S] [--out FILE.jsonl] [--raw]

--prompt / each `prompt` field of --prompts is the user question, rendered in the s1 format
(default system prompt, ending "<|im_start|>assistant\\n<|im_start|>think\\n"); --raw passes it
unchanged. Output fields: prompt (as given), thinking, answer, text, output_token_ids,
num_thinking_tokens, num_waits_used, finish_reason (+ error, and id when the input line had one).
Exit status: 0, 1 if some request failed (its line says why), 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from infer.sampling import DEFAULT_END_THINKING, SamplingParams

_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="s1 generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF-format checkpoint directory")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one user question")
    src.add_argument("--prompts", help="JSONL file, one {\"prompt\": ...} per line")
    ap.add_argument("--raw", action="store_true", help="prompts are already rendered; pass them unchanged")
    ap.add_argument("--out", default="-", help="output JSONL file (default: stdout)")
    ap.add_argument("--max-thinking-tokens", type=int, default=None)
    ap.add_argument("--min-thinking-tokens", type=int, default=0)
    ap.add_argument("--num-wait", type=int, default=0)
    ap.add_argument("--extension", default="Wait")
    ap.add_argument("--end-thinking", default=DEFAULT_END_THINKING)
    ap.add_argument("--max-answer-tokens", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: --model)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(_DTYPES), default="auto")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--num-pages", type=int, default=None)
    ap.add_argument("--gpu-memory-fraction", type=float, default=0.9)
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def read_prompts(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{path}:{n}: each line needs a string field \"prompt\"")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def generate_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = SamplingParams(
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
            max_thinking_tokens=args.max_thinking_tokens, min_thinking_tokens=args.min_thinking_tokens,
            num_wait=args.num_wait, extension=args.extension, end_thinking=args.end_thinking,
            max_answer_tokens=args.max_answer_tokens, max_tokens=args.max_tokens)
        rows = [{"prompt": args.prompt}] if args.prompt is not None else read_prompts(args.prompts)
    except (ValueError, OSError) as e:
        print(f"s1 generate: error: {e}", file=sys.stderr)
        return 2

    from infer.llm import LLM
    tokenizer = None
    if args.tokenizer:
        from model.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    try:
        llm = LLM(args.model, device=args.device, dtype=_DTYPES[args.dtype], page_size=args.page_size,
                  max_num_seqs=args.max_num_seqs, gpu_memory_fraction=args.gpu_memory_fraction,
                  num_pages=args.num_pages, enable_prefix_caching=not args.no_prefix_caching,
                  tokenizer=tokenizer, max_model_len=args.max_model_len, enforce_eager=args.enforce_eager)
    except (ValueError, OSError) as e:
        print(f"s1 generate: error: {e}", file=sys.stderr)
        return 2
    outs = llm.generate([r["prompt"] for r in rows], params, raw=args.raw, use_tqdm=not args.no_progress)
    n_err = 0
    f = sys.stdout if args.out == "-" else open(args.out, "w")
    try:
        for row, o in zip(rows, outs):
            d = o.to_dict()
            d["prompt"] = row["prompt"]
            if "id" in row:
                d = {"id": row["id"], **d}
            if o.finish_reason == "error":
                n_err += 1
                print(f"s1 generate: {o.error}", file=sys.stderr)
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    finally:
        if f is not sys.stdout:
            f.close()
    return 1 if n_err else 0


def main(argv: list[str] | None = None) -> int:
    return generate_main(sys.argv[1:] if argv is None else argv)
