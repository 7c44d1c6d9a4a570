"""One rank of the tensor-parallel ENGINE tests: tests/infer/test_tensor_parallel.py starts 4 of these with
torchrun's environment variables. argv[1]: a JSON spec {"out", "model", "tokenizer", "requests":
[[prompt, SamplingParams fields], ...], "tp_sizes", "engine" (LLM settings), "failure_timeout_s",
"die_after_steps"}. In order:

1. for every TP size (4: one group of 4 ranks; 2: two groups, TP 2 x DP 2): build the engine
   (`LLM(..., tp=...)`: each rank loads its shard) -- the first time measuring this rank's peak
   RSS growth while the engine is built (after one warm-up build, see `measure_build`) -- and run
   every request through `LLM.generate`; write the outputs to out/rank{R}.json.
2. failure, on new TP-2 groups with a short timeout: rank 3 exits in the middle of generation
   (after `die_after_steps` engine steps); its partner, rank 2, must raise TPError from the engine
   step ("rank 2 raised TPError at T"; rank 3 writes out/died.json as it exits). Ranks 0 and 1
   (the other group) leave once their engine is built.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from s1.infer import tensor_parallel as TP
from s1.infer.llm import LLM
from s1.infer.sampling import SamplingParams
from s1.model.tokenizer import Tokenizer
from tests._lib_helpers import param_bytes


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return int([line for line in f if line.startswith(key + ":")][0].split()[1]) / 1024


def _reset_peak() -> bool:
    """Return freed heap memory to the OS (else new weights could land on resident pages that an
    earlier transient freed, and the growth would read low), then reset VmHWM to the current RSS
    (Linux >= 4.0: clear_refs 5); False where not allowed."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss() -> dict:
    return {k: _status_mib(k) for k in ("VmRSS", "RssAnon", "RssFile")}


def measure_build(build) -> tuple[object, dict]:
    """Build the engine twice and measure the second build: peak RSS growth (VmHWM), and the
    anonymous (heap, tensors) and file-backed growth at the end.

    The first engine built in a process also pays one-time costs that are not this engine's
    memory: pages of torch's shared libraries run for the first time (file-backed RSS, shared with
    every process; how many pages one first call maps depends on the page cache's folio sizes, so
    it varies between machines and runs: 3.1 to 4.5 MiB measured on one machine), malloc arenas of
    threads that allocate for the first time, anything imported or cached lazily. The warm-up
    build pays those and is freed (and its heap returned to the OS by `_reset_peak`) before the
    baseline, so the measured build's growth is what one engine holds: its weights, KV cache and
    tables. The first build's numbers are reported too (first_build_*)."""
    import gc
    out = {}
    if not _reset_peak():
        return build(), None
    base = _rss()
    warm = build()
    out.update(first_build_peak_growth_mib=_status_mib("VmHWM") - base["VmRSS"],
               first_build_file_growth_mib=_status_mib("RssFile") - base["RssFile"])
    warm.close()
    del warm
    gc.collect()
    _reset_peak()
    base, t0 = _rss(), time.time()
    llm = build()
    end = _rss()
    out.update(build_s=time.time() - t0, peak_growth_mib=_status_mib("VmHWM") - base["VmRSS"],
               anon_growth_mib=end["RssAnon"] - base["RssAnon"], file_growth_mib=end["RssFile"] - base["RssFile"])
    return llm, out


def _outputs(outs) -> list[dict]:
    keep = ("output_token_ids", "num_thinking_tokens", "num_waits_used", "finish_reason", "answer",
            "max_thinking_tokens", "error")
    return [{k: getattr(o, k) for k in keep} for o in outs]


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    tok = Tokenizer.from_pretrained(spec["tokenizer"])
    tok.newline_table()   # per-tokenizer table (decodes every id: ~40 MB transient), not the engine's
    prompts = [p for p, _ in spec["requests"]]
    params = [SamplingParams(**kw) for _, kw in spec["requests"]]
    runs, memory = [], None
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    with torch.device("meta"):   # imports the meta kernels (~150 MB of Python) before the baseline
        Qwen2ForCausalLM(Qwen2Config.from_pretrained(spec["model"]))
    for n in spec["tp_sizes"]:
        tp = TP.init_tensor_parallel(n, backend="gloo", timeout_s=120)
        tp.check_peers()

        def build():
            return LLM(spec["model"], tokenizer=tok, tp=tp, tensor_parallel_size=n, **spec["engine"])
        t0 = time.time()
        if memory is None:
            llm, measured = measure_build(build)
            eng = llm.engine
            memory = measured and dict(
                measured, tp=n, weights_mib=param_bytes(eng.model) / 2**20,
                kv_cache_mib=(eng.cache.k.numel() + eng.cache.v.numel()) * eng.cache.k.element_size() / 2**20)
        else:
            llm = build()
        eng = llm.engine
        build_s = memory["build_s"] if memory and memory["tp"] == n else time.time() - t0
        t0 = time.time()
        outs = llm.generate(prompts, params, use_tqdm=False)
        runs.append(dict(tp=n, rank=tp.rank, dp_rank=tp.dp_rank, outputs=_outputs(outs), steps=llm.stats["steps"],
                         num_pages=eng.num_pages, kv_heads=eng.kv_config.num_key_value_heads,
                         vocab_range=list(eng.model.vocab_range), build_s=build_s, generate_s=time.time() - t0))
        llm.close()
    with open(os.path.join(spec["out"], f"rank{rank}.json"), "w") as f:
        json.dump(dict(runs=runs, memory=memory), f)

    # ---- a rank dies in the middle of generation
    tp = TP.init_tensor_parallel(2, backend="gloo", timeout_s=spec["failure_timeout_s"])
    llm = LLM(spec["model"], tokenizer=tok, tp=tp, tensor_parallel_size=2, **spec["engine"])
    if rank == 3:
        step, count = llm.engine.step, [0]

        def dying_step():
            count[0] += 1
            if count[0] > spec["die_after_steps"]:
                with open(os.path.join(spec["out"], "died.json"), "w") as f:
                    json.dump(dict(rank=rank, step=count[0], at=time.time()), f)
                os._exit(3)
            return step()
        llm.engine.step = dying_step
    print(f"rank {rank} ready", flush=True)
    if tp.dp_rank == 0:   # ranks 0, 1: a healthy group, not needed for what follows
        return
    t1 = time.time()
    try:
        outs = llm.generate(prompts, params, use_tqdm=False)
    except TP.TPError:
        print(f"rank {rank} raised TPError at {time.time():.3f} ({time.time() - t1:.2f} s into generate)",
              flush=True)
        raise
    print(f"rank {rank}: finished {len(outs)} requests", flush=True)


if __name__ == "__main__":
    main()
