"""`s1 eval` (also `python -m s1.evaluation`): benchmark sweeps over thinking budgets with budget
forcing and the other test-time scaling methods, graded offline.

    s1 eval --model DIR --task aime24 --out runs/aime24        # s1's sweep: 500..16000 and auto
    s1 eval --model DIR --task aime24 --budgets auto --num-wait 1,2,4,6 --out runs/wait
    s1 eval --model DIR --task aime24 --no-think --out runs/plain          # plain chat, no thinking
    s1 eval --model DIR --task aime24 --methods rs --budgets 3500,4000 --out runs/rs   # until it fits
    s1 eval --out runs/aime24 --resume ...                     # continue an interrupted run
    s1 eval --rescore runs/aime24                              # re-grade a finished run
    s1 eval --rescore runs/aime24 --grading s1 --judge CKPT    # as s1 graded, a local judge
    s1 eval --rescore runs/aime24 --grading s1 --judge-url https://api.openai.com/v1   # s1's gpt-4o-mini
    torchrun --nproc-per-node 8 -m s1.evaluation --tensor-parallel 4 --model DIR ...   # 2 engines x TP 4

The defaults are s1's evaluation settings: budgets 500,1000,2000,4000,8000,16000,auto, greedy,
float32, the extension "Wait" (num_wait 0), and no cap on answer tokens (the answer is limited
only by the context). Each record is written as its request finishes, so Ctrl-C keeps every
finished record; --resume into the same folder runs only the rest. The output folder is checked
before the model loads; a folder holding an earlier run needs --resume or --overwrite.
Under torchrun the N processes form N / --tensor-parallel data-parallel engines that split the
requests; rank 0 checks --out first and writes the same files a single process writes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from s1.common import dtypes, profiling
from s1.common.cli import HelpFormatter
from s1.common.hub import ModelNotFound, resolve_model_path
from s1.common.threads import add_threads_argument, configure_threads
from s1.evaluation import methods
from s1.evaluation.report import OUTPUT_FILES, rescore, summary_markdown
from s1.evaluation.sweep import (AUTO, METHODS, MethodOptions, check_resume, make_points, parse_budgets,
                              parse_int_list, part_files, sweep_config)
from s1.evaluation.tasks import TASKS, TaskError, load_task
from s1.infer.options import add_thinking_format_args, apply_thinking_format

DEFAULT_BUDGETS = "500,1000,2000,4000,8000,16000,auto"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1 eval", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    d = p.add_argument_group("model and task")
    d.add_argument("--model", help="HF-format model folder (config.json, *.safetensors, tokenizer.json), or a "
                                   "Hugging Face Hub id already in the local HF cache")
    d.add_argument("--task", help=f"benchmark: {' | '.join(TASKS)}")
    d.add_argument("--data-dir", help="folder with <task>/test.jsonl (default: $S1_EVAL_DATA, else "
                                      "$S1_SHARED_DATA/eval, else ../shared/data/eval)")
    d.add_argument("--data-file", help="one local file (jsonl/json/csv) in the task's schema")
    d.add_argument("--hub", help="Hugging Face datasets name to load instead of local files")
    d.add_argument("--split", help="split of --hub (default: test, else train)")
    d.add_argument("--limit", type=int, help="evaluate the first N questions only")
    s = p.add_argument_group("sweep")
    s.add_argument("--methods", default="budget_forcing", help=f"comma list of: {', '.join(METHODS)}")
    s.add_argument("--budgets", default=DEFAULT_BUDGETS,
                   help="thinking budgets, one sweep point each: token counts, 'auto' (s1's cap: the "
                        "context minus the longest prompt and the forced end) or 'none' (no cap). A budget "
                        "above what the context holds is reported as clipped")
    s.add_argument("--no-think", action="store_true",
                   help="plain chat, no thinking phase (the chat template's prompt without the thinking "
                        "start): Table 1's Qwen2.5-32B-Instruct row; with --methods majority, majority voting "
                        "over plain samples. No --budgets / --num-wait / --min-thinking-tokens")
    s.add_argument("--num-wait", default="0",
                   help="comma list: how many times an early end of thinking is replaced by --extension")
    s.add_argument("--extension", default="Wait", help="the string appended when thinking is extended "
                                                       "('' extends by suppressing the end only)")
    s.add_argument("--min-thinking-tokens", type=int, default=0, help="floor on thinking tokens (end masked below)")
    s.add_argument("--samples", type=int, default=1,
                   help="samples per (question, point); more than 1 adds majority@k per point")
    m = p.add_argument_group("other test-time scaling methods (--methods)")
    m.add_argument("--step-tokens", type=int, default=methods.DEFAULT_STEP_TOKENS,
                   help="scc: thinking tokens per step; budget N -> max(1, N // step-tokens) steps")
    m.add_argument("--scc-style", choices=("plain", "s1"), default="plain",
                   help="scc: plain = our '[N steps left]' markers, budgets in tokens (N // --step-tokens steps); "
                        "s1 = as s1 ran its step-conditional model: --budgets are step counts, thinking starts at "
                        "'<|im_start|>' and ends at '<|im_start|>0' (the model writes '<|im_start|>N steps left' "
                        "markers), 'auto' cap, Control against steps x --step-tokens; --methods scc only")
    m.add_argument("--ccc-bound", type=int,
                   help="ccc: thinking tokens the short prompt should stay below and the long one above "
                        "(default: the mean of a run with the bare question, added to the sweep)")
    m.add_argument("--max-tries", "--rs-max-attempts", dest="max_tries", type=int, default=None, metavar="N",
                   help="rs: give up on a question after N samples (it then counts as wrong); default: "
                        "resample until the thinking fits, as s1 did")
    m.add_argument("--rs-temperature", type=float, default=1.0, help="rs: sampling temperature")
    m.add_argument("--majority-k", type=int, default=64, help="majority: samples per question (K)")
    m.add_argument("--majority-budget", default=AUTO, help="majority: thinking budget of each sample "
                                                           "(a number, 'auto' or 'none')")
    m.add_argument("--majority-num-wait", type=int, default=0, help="majority: extensions per sample")
    m.add_argument("--majority-temperature", type=float, default=1.0, help="majority: sampling temperature")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (s1's evaluation)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    g.add_argument("--top-k", type=int, default=0, help="0 disables top-k")
    g.add_argument("--seed", type=int, default=0, help="seeds sampling (per request) and the GPQA option shuffle")
    g.add_argument("--max-answer-tokens", type=int,
                   help="cap on answer tokens (default: none, the answer is limited only by the context)")
    g.add_argument("--max-tokens", type=int, help="cap on all output tokens per request (default: none)")
    g.add_argument("--system-prompt", help="system message of the chat template (default: Qwen's)")
    e = p.add_argument_group("engine")
    e.add_argument("--device", help="engine device (default: cuda if available, else cpu)")
    e.add_argument("--dtype", default="float32", type=dtypes.arg_type(), metavar="{" + ",".join(dtypes.CHOICES) + "}",
                   help="model dtype (s1 evaluated in float32; auto = the checkpoint's; also fp32/bf16/fp16)")
    e.add_argument("--max-model-len", type=int, help="context limit in tokens (default: the model's)")
    e.add_argument("--max-num-seqs", type=int, default=256, help="sequences decoded at once")
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="share of GPU memory the engine may use (weights + KV cache), in (0, 1]")
    e.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="ranks each engine spans (one process, one GPU each). Under `torchrun --nproc-per-node "
                        "N*DP -m s1.evaluation ...` the world is DP data-parallel engines of N ranks each: every "
                        "engine runs an interleaved share of the sweep and rank 0 writes the outputs")
    e.add_argument("--tp-timeout", type=float, default=1800.0, metavar="S",
                   help="seconds a rank waits for its engine's peers in a collective before failing")
    add_threads_argument(e)
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (config.json, samples.jsonl, summary.json/.md, scaling.png)")
    o.add_argument("--resume", action="store_true",
                   help="continue the run in --out: keep its finished records, run only the rest")
    o.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    o.add_argument("--rescore", metavar="DIR", help="re-grade the finished run in DIR (no generation)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    profiling.add_arguments(p)
    j = p.add_argument_group("grading (s1/evaluation/grading.py)")
    j.add_argument("--grading", choices=("rules", "s1", "mathverify"),
                   help="rules: our offline grader (default); s1: s1's own extraction and comparison "
                        "(digit strings as integers, else the judge; GPQA A-D, else the judge, else 'A'); "
                        "mathverify: Hugging Face Math-Verify (pip install -e .[mathverify])")
    j.add_argument("--judge", metavar="MODEL",
                   help="run s1's judge prompts on this local checkpoint (our engine, no API key, batched, "
                        "cached in the run folder's judge_cache.jsonl); reports how often it agrees with the rules")
    j.add_argument("--judge-url", metavar="URL",
                   help="send s1's judge prompts to an OpenAI-compatible endpoint instead "
                        "(needs `pip install -e .[judge]`; key from OPENAI_API_KEY)")
    j.add_argument("--judge-model", default="gpt-4o-mini", help="model name at --judge-url (s1's: gpt-4o-mini)")
    j.add_argument("--judge-temperature", type=float,
                   help="--judge-url sampling temperature (default 0.5, s1's); the local judge is greedy")
    j.add_argument("--judge-max-tokens", type=int, default=16,
                   help="reply tokens of the local judge (an index or a letter needs a few)")
    add_thinking_format_args(p)
    return p


def check_flags(a) -> None:
    """Range checks with the flag's name (before anything loads)."""
    def need(ok, flag, what, v):
        if not ok:
            raise ValueError(f"{flag} must be {what}, got {v}")
    need(a.temperature >= 0, "--temperature", ">= 0", a.temperature)
    need(0 < a.top_p <= 1, "--top-p", "in (0, 1]", a.top_p)
    need(a.top_k >= 0, "--top-k", ">= 0", a.top_k)
    need(a.seed >= 0, "--seed", ">= 0", a.seed)
    need(a.samples >= 1, "--samples", ">= 1", a.samples)
    need(a.max_tries is None or a.max_tries >= 1, "--max-tries", ">= 1", a.max_tries)
    if a.no_think:
        given = [f for f, on in (("--budgets", a.budgets != DEFAULT_BUDGETS), ("--num-wait", a.num_wait != "0"),
                                 ("--min-thinking-tokens", a.min_thinking_tokens != 0),
                                 ("--majority-budget", a.majority_budget != AUTO),
                                 ("--majority-num-wait", a.majority_num_wait != 0)) if on]
        if given:
            raise ValueError(f"--no-think has no thinking phase to budget: drop {', '.join(given)}")
    need(a.min_thinking_tokens >= 0, "--min-thinking-tokens", ">= 0", a.min_thinking_tokens)
    need(a.rs_temperature >= 0, "--rs-temperature", ">= 0", a.rs_temperature)
    need(a.majority_temperature >= 0, "--majority-temperature", ">= 0", a.majority_temperature)
    need(0 < a.gpu_memory_utilization <= 1, "--gpu-memory-utilization", "in (0, 1]", a.gpu_memory_utilization)
    need(a.max_num_seqs >= 1, "--max-num-seqs", ">= 1", a.max_num_seqs)
    need(a.tensor_parallel >= 1, "--tensor-parallel", ">= 1", a.tensor_parallel)
    need(a.tp_timeout > 0, "--tp-timeout", "> 0", a.tp_timeout)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world % a.tensor_parallel:
        raise ValueError(f"--tensor-parallel {a.tensor_parallel} must divide the number of processes ({world}): "
                         f"launch `torchrun --nproc-per-node <DP x {a.tensor_parallel}> -m s1.evaluation ...`")
    for flag, v in (("--max-answer-tokens", a.max_answer_tokens), ("--max-tokens", a.max_tokens),
                    ("--max-model-len", a.max_model_len), ("--threads", a.threads)):
        need(v is None or v >= 1, flag, ">= 1", v)


def prepare_out_dir(out: str, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs; make sure the folder can be created and written, before any work."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder")
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if entries and not (resume or overwrite):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(f"--out {out} is not empty ({shown}): pass --resume to continue the run in it, or "
                         "--overwrite to replace its results")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".s1_eval_write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e.strerror or e}") from None
    if overwrite:
        for name in OUTPUT_FILES + ("samples.jsonl.tmp",):
            path = os.path.join(out, name)
            if os.path.isfile(path):
                os.remove(path)
        for path in part_files(out):   # data-parallel groups' records of an unfinished run
            os.remove(path)


def load_tokenizer(model_dir: str, a):
    """The model's tokenizer with the thinking format of the flags (--thinking-*; --scc-style s1:
    s1's step-conditional format, s1/model/thinking.py S1_STEPS). ValueError naming the flag."""
    from s1.model import thinking
    from s1.model.tokenizer import Tokenizer
    if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
        raise ValueError(f"--model {a.model}: no tokenizer.json in {model_dir}")
    tok = Tokenizer.from_pretrained(model_dir)
    base = thinking.S1_STEPS if a.scc_style == "s1" else None
    if base is not None and a.thinking_format == "think":
        raise ValueError("--scc-style s1 is s1's own format; it does not combine with --thinking-format think")
    apply_thinking_format(tok, a, base)
    return tok


def build_judge(a, run_dir: str):
    """The judge of --judge / --judge-url (None without either), cached in run_dir."""
    from s1.evaluation.judge import make_judge

    if not (a.judge or a.judge_url):
        return None
    if a.judge and a.judge_url:
        raise ValueError("give --judge (a local checkpoint) or --judge-url (an endpoint), not both")
    cache = os.path.join(run_dir, "judge_cache.jsonl")
    if a.judge_url:
        kw = {} if a.judge_temperature is None else {"temperature": a.judge_temperature}
        return make_judge(url=a.judge_url, url_model=a.judge_model, cache=cache, **kw)
    if a.judge_max_tokens < 1:
        raise ValueError(f"--judge-max-tokens must be >= 1, got {a.judge_max_tokens}")
    return make_judge(model=resolve_model_path(a.judge, "--judge"), cache=cache, device=a.device,
                      max_tokens=a.judge_max_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"s1 eval: {msg}", file=sys.stderr)
        return 2

    if a.rescore:
        try:
            judge = build_judge(a, a.out or a.rescore)
            summary = rescore(a.rescore, a.out, grading=a.grading, judge=judge)
        except (FileNotFoundError, ValueError, KeyError, ImportError, ModelNotFound) as e:
            return fail(str(e))
        print(summary_markdown(summary))
        return 0
    missing = [f"--{k}" for k in ("model", "task", "out") if not getattr(a, k)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or use --rescore DIR)")
    try:
        check_flags(a)
        profiling.check_arguments(a)
        judge = build_judge(a, a.out)   # a bad --judge / --judge-url fails before any generation
        if a.grading == "mathverify":
            from s1.evaluation.mathverify import MISSING, available
            if not available():
                raise ImportError(MISSING)
    except (ValueError, ImportError, ModelNotFound) as e:
        return fail(str(e))
    # torchrun: WORLD_SIZE = DP x TP processes. Join first: rank 0 alone checks and prepares --out,
    # and every rank learns whether all are fine before any model loads.
    tp = dp = None
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        from s1.evaluation.data_parallel import DataParallel
        from s1.infer.tensor_parallel import init_tensor_parallel
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tp = init_tensor_parallel(a.tensor_parallel, timeout_s=a.tp_timeout,
                                  backend="nccl" if dev.startswith("cuda") else "gloo")
        dp = DataParallel(tp)
        rank0 = dp.writer
    err = None
    try:
        budgets = [None] if a.no_think else parse_budgets(a.budgets, "--budgets")
        small = [b for b in budgets if isinstance(b, int) and b < a.min_thinking_tokens]
        if small:
            raise ValueError(f"--min-thinking-tokens {a.min_thinking_tokens} exceeds --budgets value {small[0]}")
        waits = parse_int_list(a.num_wait, "--num-wait")
        majority_budget = parse_budgets(a.majority_budget, "--majority-budget")
        if len(majority_budget) != 1:
            raise ValueError(f"--majority-budget takes one value, got {a.majority_budget!r}")
        opts = MethodOptions(step_tokens=a.step_tokens, ccc_bound=a.ccc_bound, rs_max_attempts=a.max_tries,
                             rs_temperature=a.rs_temperature, majority_k=a.majority_k,
                             majority_budget=majority_budget[0], majority_num_wait=a.majority_num_wait,
                             majority_temperature=a.majority_temperature, scc_style=a.scc_style)
        points = make_points([m.strip() for m in a.methods.split(",") if m.strip()], budgets, waits,
                             a.min_thinking_tokens, opts, thinking=not a.no_think)
        items = load_task(a.task, data_dir=a.data_dir, data_file=a.data_file, hub=a.hub, split=a.split,
                          limit=a.limit, seed=a.seed)
        model_dir = resolve_model_path(a.model, "--model")   # a folder, or a Hub id in the local HF cache
        if rank0:
            prepare_out_dir(a.out, a.resume, a.overwrite)
        base = {"top_p": a.top_p, "top_k": a.top_k, "extension": a.extension,
                "max_answer_tokens": a.max_answer_tokens}
        if a.max_tokens is not None:
            base["max_tokens"] = a.max_tokens
        run_kw = dict(samples=a.samples, temperature=a.temperature, seed=a.seed, base_params=base,
                      task=a.task, model=a.model)
        tokenizer = load_tokenizer(model_dir, a)
        if a.resume and rank0:  # a different sweep in --out is refused before the model loads
            check_resume(a.out, sweep_config(items, points, **run_kw,
                                             thinking_format=tokenizer.thinking_format.describe()))
    except (ValueError, TaskError, ModelNotFound, FileNotFoundError) as e:
        err = str(e)
    if dp is not None:   # one rank's problem stops them all (rank 0's --out checks included)
        errs = [e for e in dp.all_gather(err) if e is not None]
        err = err or (errs[0] if errs else None)
    if err is not None:
        return fail(err)
    if a.samples > 1 and a.temperature == 0 and rank0:
        print("s1 eval: warning: --samples > 1 with --temperature 0 gives identical greedy samples", file=sys.stderr)

    import torch

    from s1.evaluation.sweep import run_eval
    from s1.infer import LLM, SamplingParams
    from s1.infer.tensor_parallel import TPError

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if tp is not None and device.startswith("cuda"):
        device = str(tp.device)   # cuda:LOCAL_RANK
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            model_config = json.load(f)
    except (OSError, ValueError):
        model_config = None   # the engine reports a broken checkpoint itself
    try:
        configure_threads(a.threads, work_hint=model_config, device=device)
    except ValueError as e:
        return fail(str(e))
    llm_kwargs = {"device": device, "max_num_seqs": a.max_num_seqs, "max_model_len": a.max_model_len,
                  "tokenizer": tokenizer,
                  "gpu_memory_utilization": a.gpu_memory_utilization,
                  "dtype": None if a.dtype == "auto" else dtypes.to_torch(a.dtype)}
    if tp is not None:
        llm_kwargs.update(tp=tp, tensor_parallel_size=tp.world_size)
    try:
        llm = LLM(model_dir, **llm_kwargs)
    except KeyboardInterrupt:
        if rank0:
            print("\ns1 eval: interrupted while loading the model; nothing was generated", file=sys.stderr)
        return 130
    except TPError as e:
        print(f"s1 eval: {e}", file=sys.stderr)
        return 1
    if a.system_prompt is not None:   # render_prompt's system message (s1/model/tokenizer.py)
        llm.tokenizer.system_prompt = a.system_prompt
    try:
        with profiling.session_from_args(a, "eval", say=lambda m: print(m, file=sys.stderr)):
            summary = run_eval(llm, items, points, out_dir=a.out, sampling_params_cls=SamplingParams,
                               resume=a.resume, progress=not a.no_progress, dp=dp, **run_kw)
    except KeyboardInterrupt:
        if rank0:
            print(f"\ns1 eval: interrupted; the finished records are in {os.path.join(a.out, 'samples.jsonl')}"
                  + (" and samples.dp<k>.jsonl" if dp is not None and dp.size > 1 else "")
                  + ". Run the same command with --resume to finish the rest.", file=sys.stderr)
        return 130
    except TPError as e:   # a peer rank exited or hung: no teardown (it would wait on the dead rank)
        print(f"s1 eval: {e}", file=sys.stderr)
        return 1
    if tp is not None:
        import torch.distributed as dist
        dist.destroy_process_group()
    if summary is None:   # not rank 0: its records went to rank 0
        return 0
    if a.grading not in (None, "rules") or a.judge or a.judge_url:
        llm.close()   # the local judge loads its own engine
        try:
            t = summary["_timing"]
            summary = rescore(a.out, grading=a.grading, judge=judge) | {"_timing": t}
        except (ValueError, ImportError, ModelNotFound) as e:
            return fail(f"grading: {e}")
    t = summary["_timing"]
    print(summary_markdown(summary))
    print(f"{t['requests']} requests ({t['finished_earlier']} finished earlier), {t['generated']} generations, "
          f"{t['output_tokens']} output tokens in "
          f"{t['generate_wall_s']:.1f}s ({t['output_tokens_per_s'] or 0:.1f} tok/s); outputs in {a.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
