"""`s1 generate`: decode prompts with budget forcing, one JSON line per prompt.

    s1 generate --model DIR|HUB_ID (--prompt TEXT | --prompts FILE.jsonl) [--max-thinking-tokens N]
        [--num-wait K] [--temperature T --seed S] [--out FILE.jsonl] [--raw] [--system-prompt TEXT]

--prompt / each "prompt" field of --prompts is a user question, rendered with the checkpoint's chat
template (else the built-in s1 format) and the thinking start "<|im_start|>think"; --raw passes it
unchanged; --no-think renders it as plain chat (the template without the thinking start) and the
model answers without a thinking phase. stdout (the default --out) carries only JSON lines; progress and the summary go to
stderr. Every record is written (and flushed) as soon as its request finishes, so an interrupted
run (Ctrl-C) keeps what finished; a complete run leaves --out in prompt order. Fields: index (the
prompt's line, from 0), id (when the input line had one), seed (with --seed), prompt (as given),
thinking, answer, text, output_token_ids, num_thinking_tokens, num_waits_used, finish_reason
(+ error). --seed S gives request i the seed hash(S, i): different prompts get different noise,
the same file gives the same tokens on every run.
Exit status: 0; 1 if some request failed (its record says why); 2 on bad arguments; 130 on Ctrl-C.

Tensor parallelism: `torchrun --nproc-per-node N -m s1.infer --tensor-parallel N ...` splits the model
over N ranks (N GPUs; gloo processes on CPU); every rank runs the same engine, rank 0 writes --out
and the messages. A rank that exits or stops answering makes the others fail within --tp-timeout
(exit status 1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

from s1.common import dtypes, profiling
from s1.common.cli import HelpFormatter
from s1.common.threads import add_threads_argument
from s1.infer.options import (UsageError, add_thinking_format_args, apply_thinking_format, request_seed,
                              resolve_device, resolve_inputs)
from s1.infer.sampling import DEFAULT_END_THINKING   # pure Python: no torch before a command needs it

PROG = "s1 generate"

# SamplingParams / engine field -> the flag a user typed (errors speak in flags, not fields)
FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed",
         "max_thinking_tokens": "--max-thinking-tokens", "min_thinking_tokens": "--min-thinking-tokens",
         "num_wait": "--num-wait", "extension": "--extension", "end_thinking": "--end-thinking",
         "max_answer_tokens": "--max-answer-tokens", "max_tokens": "--max-tokens",
         "page_size": "--page-size", "max_num_seqs": "--max-num-seqs", "max_model_len": "--max-model-len",
         "num_pages": "--num-pages", "gpu_memory_utilization": "--gpu-memory-utilization",
         "gpu_memory_fraction": "--gpu-memory-utilization"}


def _thinking_budget(v: str):
    if v.strip().lower() == "auto":
        return "auto"
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not an integer or 'auto'") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    io = ap.add_argument_group("input and output")
    io.add_argument("--model", required=True,
                    help="HF-format checkpoint folder, or a Hugging Face Hub id already in the local HF cache "
                         "(e.g. Qwen/Qwen2.5-0.5B-Instruct; `hf download ID` fetches one)")
    io.add_argument("--tokenizer", default=None,
                    help="folder (or cached Hub id) with tokenizer.json; default: the --model folder")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one user question")
    src.add_argument("--prompts", metavar="FILE", help='JSONL file, one {"prompt": ..., "id": optional} per line')
    io.add_argument("--raw", action="store_true",
                    help="prompts are already rendered: pass them unchanged (no chat template, no thinking start)")
    io.add_argument("--no-think", action="store_true",
                    help="plain chat: the chat template's prompt without the thinking start, generated with no "
                         "thinking phase (how s1 ran Qwen2.5-32B-Instruct); no budget-forcing flags")
    io.add_argument("--system-prompt", default=None,
                    help="system message of the chat template (default: the template's own, for Qwen2.5 "
                         "'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.')")
    io.add_argument("--out", default="-", help="output JSONL file; '-' is stdout")
    io.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bf = ap.add_argument_group("budget forcing (s1 paper, section 3)")
    bf.add_argument("--max-thinking-tokens", type=_thinking_budget, default=None, metavar="N|auto",
                    help="cap on thinking tokens (then the end-thinking string is forced); 'auto': what the "
                         "context leaves (s1's setting); default: no cap")
    bf.add_argument("--min-thinking-tokens", type=int, default=0, metavar="N",
                    help="floor on thinking tokens: end-of-thinking tokens are masked out below it")
    bf.add_argument("--num-wait", type=int, default=0, metavar="K",
                    help="times an attempt to stop thinking is replaced by --extension (s1's 'Wait')")
    bf.add_argument("--extension", default="Wait", help="string inserted when thinking is extended")
    bf.add_argument("--end-thinking", default=None,
                    help="string forced when the thinking cap is reached (default: the thinking format's "
                         f"forced end, s1's {DEFAULT_END_THINKING!r}; see --forced-end)")
    bf.add_argument("--max-answer-tokens", type=int, default=None, metavar="N",
                    help="cap on sampled answer tokens; default: until end of turn")
    bf.add_argument("--max-tokens", type=int, default=None, metavar="N",
                    help="cap on all output tokens (thinking + forced + answer); default: the context")
    sp = ap.add_argument_group("sampling")
    sp.add_argument("--temperature", type=float, default=0.0, help="0 is greedy decoding")
    sp.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 disables top-k")
    sp.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    sp.add_argument("--seed", type=int, default=None,
                    help="request i samples with seed hash(SEED, i): reproducible per file and line; "
                         "default: a random seed per request")
    en = ap.add_argument_group("engine")
    en.add_argument("--device", default="auto", help="cpu, cuda or cuda:N; auto: cuda when available, else cpu")
    en.add_argument("--dtype", type=dtypes.arg_type(), default="auto", metavar="{" + ",".join(dtypes.CHOICES) + "}",
                    help="weights and KV cache dtype (also fp32/bf16/fp16); auto: the checkpoint's torch_dtype")
    en.add_argument("--page-size", type=int, default=16, help="tokens per KV-cache page")
    en.add_argument("--max-num-seqs", type=int, default=256, help="most requests decoded at once")
    en.add_argument("--max-model-len", type=int, default=None,
                    help="context limit (prompt + output); default: the model's max_position_embeddings")
    en.add_argument("--num-pages", type=int, default=None,
                    help="KV-cache pages; default: from --gpu-memory-utilization on CUDA, <= 1 GiB on CPU")
    en.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                    help="fraction of GPU memory for weights, activations and KV cache (vLLM's flag)")
    en.add_argument("--no-prefix-caching", action="store_true", help="do not share KV pages of common prefixes")
    en.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs for decoding")
    en.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                    help="split the model over N ranks, one process each: launch with "
                         "`torchrun --nproc-per-node N -m s1.infer --tensor-parallel N ...` (rank 0 writes --out)")
    en.add_argument("--tp-timeout", type=float, default=600.0, metavar="S",
                    help="seconds a rank waits for its peers in a collective before giving up with an error")
    add_threads_argument(en)
    profiling.add_arguments(ap)
    add_thinking_format_args(ap)
    return ap


# ----------------------------------------------------------------------------- checks (no torch)
def flagify(msg: str) -> str:
    """'SamplingParams.top_p=1.5: must lie in (0, 1]' -> '--top-p 1.5: must lie in (0, 1]';
    'exceeds max_thinking_tokens=4' -> 'exceeds --max-thinking-tokens 4'."""
    msg = re.sub(r"^\s*(?:SamplingParams|LLM)\.", "", msg)
    return re.sub(r"\b([a-z_]+)=", lambda m: f"{FLAGS[m.group(1)]} " if m.group(1) in FLAGS else m.group(0), msg)


def check_args(a: argparse.Namespace) -> None:
    """Flag values the engine would reject, named by flag (before anything heavy is loaded)."""
    def bad(flag, value, why):
        raise UsageError(f"{flag} {value}: {why}")

    for name in ("page_size", "max_num_seqs", "max_model_len", "num_pages", "threads", "tensor_parallel"):
        v = getattr(a, name)
        if v is not None and v < 1:
            bad("--" + name.replace("_", "-"), v, "must be >= 1")
    profiling.check_arguments(a)
    if not 0 < a.gpu_memory_utilization <= 1:
        bad("--gpu-memory-utilization", a.gpu_memory_utilization, "must lie in (0, 1]")
    if a.seed is not None and a.seed < 0:
        bad("--seed", a.seed, "must be >= 0")
    if a.tp_timeout <= 0:
        bad("--tp-timeout", a.tp_timeout, "must be > 0")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != a.tensor_parallel:
        why = (f"needs {a.tensor_parallel} processes (one per rank): launch with `torchrun --nproc-per-node "
               f"{a.tensor_parallel} -m s1.infer --tensor-parallel {a.tensor_parallel} ...`" if world == 1 else
               f"this launch has {world} processes (WORLD_SIZE); {PROG} runs one engine over all of them: "
               f"give --tensor-parallel {world} (data parallelism is `s1 eval`'s)")
        bad("--tensor-parallel", a.tensor_parallel, why)
    if a.no_think:
        if a.raw:
            raise UsageError("--no-think renders the plain chat prompt; --raw passes prompts unchanged: give one")
        forcing = [f for f, on in (("--max-thinking-tokens", a.max_thinking_tokens is not None),
                                   ("--min-thinking-tokens", a.min_thinking_tokens > 0),
                                   ("--num-wait", a.num_wait > 0)) if on]
        if forcing:
            raise UsageError(f"--no-think has no thinking phase to control: drop {', '.join(forcing)}")
    if int(os.environ.get("RANK", "0")) == 0:   # rank 0 alone writes
        check_out_path(a.out)


def render_chat_prompt(tokenizer, question: str) -> str:
    """The plain chat prompt of --no-think (`s1 generate` and `s1 eval`): the prompt the engine
    renders for SamplingParams(thinking=False) (`Tokenizer.render_prompt(thinking=False)`: the
    checkpoint's chat template with enable_thinking=False and the assistant turn opened, no
    thinking start; Qwen3's template adds its empty <think></think> block). Sent raw with no
    thinking rules, the engine generates it without a thinking phase."""
    return tokenizer.render_prompt(question, thinking=False)


def check_out_path(out: str) -> None:
    """--out must be writable before any work is done (a bad path used to cost the whole run)."""
    if out == "-":
        return
    if os.path.isdir(out):
        raise UsageError(f"--out {out}: is a folder (give a file name, e.g. {os.path.join(out, 'out.jsonl')})")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out}: not writable")


def make_params(a: argparse.Namespace, n: int):
    """One SamplingParams per request; --seed S -> request i gets request_seed(S, i)."""
    from s1.infer.sampling import SamplingParams
    kw = dict(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
              max_thinking_tokens=a.max_thinking_tokens, min_thinking_tokens=a.min_thinking_tokens,
              num_wait=a.num_wait, extension=a.extension, end_thinking=a.end_thinking,
              max_answer_tokens=a.max_answer_tokens, max_tokens=a.max_tokens)
    try:
        base = SamplingParams(**kw, seed=a.seed)
        if a.seed is None:
            return [base] * n
        return [SamplingParams(**kw, seed=request_seed(a.seed, i)) for i in range(n)]
    except ValueError as e:
        raise UsageError(flagify(str(e))) from None


def read_prompts(path: str) -> list[dict]:
    from s1.common.jsonl import JsonlError, read_jsonl
    try:
        rows = read_jsonl(path)
    except FileNotFoundError:
        raise UsageError(f"--prompts {path}: no such file") from None
    except JsonlError as e:
        raise UsageError(f"--prompts {e}") from None
    for n, row in enumerate(rows):
        if not isinstance(row.get("prompt"), str):
            raise UsageError(f"--prompts {path}: record {n + 1} needs a string field \"prompt\"")
    if not rows:
        raise UsageError(f"--prompts {path}: no prompts")
    return rows


# ----------------------------------------------------------------------------- output
class RecordSink:
    """Writes each finished request's record at once (stdout, or --out appended + flushed);
    `finish()` leaves a complete --out file in prompt order. discard=True (tensor-parallel ranks
    other than 0): keeps the records, writes nothing."""

    def __init__(self, out: str, discard: bool = False):
        from s1.common.jsonl import JsonlAppender
        self.out, self.records, self.discard = out, {}, discard
        self.stdout = sys.stdout          # the real stdout: only records go there
        if out == "-" or discard:
            self.f = None
        else:
            open(out, "w").close()            # a new run replaces an earlier file
            self.f = JsonlAppender(out)

    def write(self, index: int, record: dict) -> None:
        if index in self.records:
            return
        self.records[index] = record
        if self.discard:
            return
        if self.f is None:
            self.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.stdout.flush()
        else:
            self.f.write(record)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()

    def finish(self) -> None:
        self.close()
        if self.f is not None:
            from s1.common.jsonl import write_jsonl
            write_jsonl(self.out, [self.records[i] for i in sorted(self.records)])


def make_record(index: int, row: dict, output, seed) -> dict:
    d = output.to_dict()
    d["prompt"] = row["prompt"]
    head = {"index": index}
    if "id" in row:
        head["id"] = row["id"]
    if seed is not None:
        head["seed"] = seed
    return {**head, **d}


# ----------------------------------------------------------------------------- main
def generate_main(argv: list[str]) -> int:
    try:
        return _generate(argv)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted before generation started; nothing written", file=sys.stderr)
        return 130


def _generate(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    try:
        check_args(a)
        rows = [{"prompt": a.prompt}] if a.prompt is not None else read_prompts(a.prompts)
        params = make_params(a, len(rows))
        model_dir, tok_dir, cfg = resolve_inputs(a.model, a.tokenizer)
        from s1.common.threads import configure_threads
        device = resolve_device(a.device)            # imports torch
        threads = configure_threads(a.threads, work_hint=cfg, device=device)
    except (UsageError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    from s1.infer.tensor_parallel import TPError, init_tensor_parallel
    t0 = time.perf_counter()
    tp = None
    if a.tensor_parallel > 1:   # every rank runs the same engine steps; rank 0 writes
        tp = init_tensor_parallel(a.tensor_parallel, timeout_s=a.tp_timeout,
                                  backend="nccl" if device.startswith("cuda") else "gloo")
    rank0 = tp is None or tp.rank == 0
    try:
        rc = _run(a, rows, params, model_dir, tok_dir, cfg, device, threads, tp, rank0, t0)
    except TPError as e:   # a peer rank exited or hung: say so and exit (no teardown: it would wait)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if tp is not None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    return rc


def _run(a, rows, params, model_dir, tok_dir, cfg, device, threads, tp, rank0: bool, t0: float) -> int:
    from s1.common.threads import is_tiny
    from s1.infer.llm import LLM
    from s1.model.tokenizer import Tokenizer

    def say(msg: str) -> None:
        if rank0:
            print(msg, file=sys.stderr)
    try:
        tokenizer = Tokenizer.from_pretrained(tok_dir)
        tokenizer.system_prompt = a.system_prompt
        apply_thinking_format(tokenizer, a)
        kw = dict(device=device, dtype=None if a.dtype == "auto" else dtypes.to_torch(a.dtype),
                  page_size=a.page_size, max_num_seqs=a.max_num_seqs, num_pages=a.num_pages,
                  enable_prefix_caching=not a.no_prefix_caching, tokenizer=tokenizer,
                  max_model_len=a.max_model_len, enforce_eager=a.enforce_eager,
                  gpu_memory_utilization=a.gpu_memory_utilization)
        if tp is not None:
            kw.update(tp=tp, tensor_parallel_size=tp.world_size)
        llm = LLM(model_dir, **kw)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {flagify(str(e))}", file=sys.stderr)
        return 2
    n_params = "tiny" if is_tiny(cfg) else "large"
    on = device if tp is None else f"{tp.world_size} ranks (tensor parallel, {device})"
    say(f"{PROG}: {a.model} on {on} ({threads} CPU thread{'s' if threads != 1 else ''}, {n_params} model), "
        f"loaded in {time.perf_counter() - t0:.1f}s; {len(rows)} request(s) -> "
        f"{'stdout' if a.out == '-' else a.out}")

    sink = RecordSink(a.out, discard=not rank0)
    seeds = [p.seed if a.seed is not None else None for p in params]
    n_err = 0

    def on_output(i, o):
        nonlocal n_err
        if o.finish_reason == "error":
            n_err += 1
            say(f"{PROG}: {flagify(o.error or '')}")
        sink.write(i, make_record(i, rows[i], o, seeds[i]))

    prompts = [r["prompt"] for r in rows]
    if a.no_think:   # the plain chat prompt, sent raw: no thinking rules, plain generation
        prompts = [render_chat_prompt(llm.tokenizer, p) for p in prompts]
    t1 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr), \
                profiling.session_from_args(a, "generate", say=say):   # the engine's prints are not records
            llm.generate(prompts, params, raw=a.raw or a.no_think, use_tqdm=not a.no_progress and rank0,
                         on_output=on_output)
    except KeyboardInterrupt:
        sink.close()
        say(f"\n{PROG}: interrupted; {len(sink.records)} of {len(rows)} records were written"
            + ("" if a.out == "-" else f" to {a.out} (in completion order, each with its index)"))
        return 130
    sink.finish()
    dt = time.perf_counter() - t1
    n_tok = sum(len(r.get("output_token_ids", [])) for r in sink.records.values())
    say(f"{PROG}: {len(rows)} record(s) -> {'stdout' if a.out == '-' else a.out}; {n_tok} output tokens in "
        f"{dt:.2f}s" + (f"; {n_err} request(s) failed (see their error field)" if n_err else ""))
    return 1 if n_err else 0


def main(argv: list[str] | None = None) -> int:
    return generate_main(sys.argv[1:] if argv is None else argv)
