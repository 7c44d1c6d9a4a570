"""`LLM`: the offline API, a loop over the online engine (s1/infer/engine.py): one engine, not two.

    from s1.infer import LLM, SamplingParams
    with LLM("ckpt/", device="cuda") as llm:
        outs = llm.generate(["What is 2+2?"], SamplingParams(max_thinking_tokens=512, num_wait=1))

Prompts: strings are user questions rendered with `tokenizer.render_prompt` (s1 format, ending in
"<|im_start|>think"); raw=True passes already-rendered strings; token-id lists are used as is
(always raw). A single prompt (string or id list) is accepted too. Keyword settings are
EngineConfig's (s1/infer/config.py).

Bad requests (empty prompt, prompt too long for the context or the whole cache, invalid
SamplingParams, unknown stop token) come back with finish_reason "error" and a message in
`.error`; the other requests run normally. `on_output(index, output)` is called as each request
finishes (completion order), e.g. to append it to a file; an interruption (Ctrl-C) aborts the
call's unfinished requests, frees their pages, and leaves the engine usable.

`close()` (or leaving the `with` block) frees the KV cache, CUDA graphs and device tables at once;
dropping the last reference frees them too.

Tensor parallelism: `LLM(model_dir, tensor_parallel_size=N)` in each of N processes started by
torchrun (or `tp=` a TPGroup from s1/infer/tensor_parallel.py::init_tensor_parallel). Every rank
must call `generate` with the same prompts and parameters; every rank returns the same outputs.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from s1.infer.config import EngineConfig
from s1.infer.engine import LLMEngine
from s1.infer.request import GenerationOutput
from s1.infer.sampling import AUTO, SamplingParams
from s1.infer.tensor_parallel import TPError


class LLM:
    def __init__(self, model_dir=None, device="cpu", dtype=None, *, model=None, tokenizer=None, tp=None,
                 **settings):
        if "gpu_memory_fraction" in settings:
            raise TypeError("gpu_memory_fraction is now gpu_memory_utilization (vLLM's name)")
        tok_dir = settings.pop("tokenizer_dir", None)
        cfg = EngineConfig(model=None if model_dir is None else str(model_dir), tokenizer=tok_dir,
                           device=str(device), dtype=None if dtype is None else _dtype_name(dtype), **settings)
        self.engine = LLMEngine(cfg, model=model, tokenizer=tokenizer, tp=tp)
        self.stats: dict = {}

    # the engine's parts, for inspection and tests
    tokenizer = property(lambda self: self.engine.tokenizer)
    model = property(lambda self: self.engine.model)
    block_manager = property(lambda self: self.engine.block_manager)
    runner = property(lambda self: self.engine.runner)
    scheduler = property(lambda self: self.engine.scheduler)
    num_pages = property(lambda self: self.engine.num_pages)
    page_size = property(lambda self: self.engine.page_size)
    max_model_len = property(lambda self: self.engine.max_model_len)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prompt_length(self, prompt, raw: bool = False) -> int:
        """Tokens of a prompt as the engine renders it (e.g. for a fixed `auto_prompt_len`)."""
        return len(self.engine.prepare(prompt, SamplingParams(), raw).ids)

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None,
                 raw: bool = False, use_tqdm: bool = True, on_output=None,
                 auto_prompt_len: int | None = None) -> list[GenerationOutput]:
        """Outputs in prompt order. `auto_prompt_len`: the prompt length s1's "auto" thinking cap
        subtracts (default: the longest prompt of this call; a caller that splits one batch over
        several calls, e.g. a resumed evaluation, passes the longest of the whole batch)."""
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                        and all(isinstance(i, int) and not isinstance(i, bool) for i in prompts)):
            prompts = [prompts]              # one prompt, as vLLM accepts it
        prompts = list(prompts)
        params = params if params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")
        outputs: list[GenerationOutput | None] = [None] * len(prompts)
        index = self._submit(prompts, params, raw, auto_prompt_len, outputs, on_output)
        c0 = dict(self.engine.counters, peak_pages_used=0)
        self.engine.counters["peak_pages_used"] = 0
        t0 = time.perf_counter()
        self._drain(index, outputs, on_output, use_tqdm)
        self._record_stats(c0, time.perf_counter() - t0, outputs, len(index), use_tqdm)
        return outputs

    def _submit(self, prompts, params, raw, auto_prompt_len, outputs, on_output) -> dict:
        """Check and queue every request; a bad one gets an "error" output at once. Returns
        {request id: prompt index}."""
        eng = self.engine

        def fail(i, e):
            p = prompts[i]
            outputs[i] = GenerationOutput(prompt=p if isinstance(p, str) else str(p), thinking="", answer="",
                                          text="", output_token_ids=[], num_thinking_tokens=0, num_waits_used=0,
                                          finish_reason="error", error=f"request {i}: {e}")
            if on_output is not None:
                on_output(i, outputs[i])

        preps = {}
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            try:
                preps[i] = eng.prepare(prompt, p, raw)
            except ValueError as e:
                fail(i, e)
        # s1's "auto" cap subtracts the longest prompt of the whole batch it runs
        auto_len = auto_prompt_len
        if auto_len is None and any(pr.params.max_thinking_tokens == AUTO for pr in preps.values()):
            auto_len = max(len(pr.ids) for pr in preps.values())
        index = {}
        for i, pr in preps.items():
            try:
                index[eng.add_prepared(pr, auto_prompt_len=auto_len, stream=False)] = i
            except ValueError as e:
                fail(i, e)
        return index

    def _drain(self, index: dict, outputs: list, on_output, use_tqdm: bool) -> None:
        """Step the engine until this call's requests have finished, with a progress bar that
        shows tokens/s and the running / waiting counts. Interrupted (Ctrl-C, an exception): the
        call's requests are aborted and their pages freed, so the engine stays usable."""
        eng = self.engine
        bar = tqdm(total=len(index), desc="generate", unit="req", disable=not use_tqdm, dynamic_ncols=True,
                   file=sys.stderr)
        tok0, t0 = eng.counters["output_tokens"], time.perf_counter()
        last, done = t0, 0
        try:
            while done < len(index):
                for ro in eng.step():
                    if ro.finished and ro.request_id in index:
                        i = index[ro.request_id]
                        outputs[i] = ro.output
                        done += 1
                        bar.update(1)
                        if on_output is not None:
                            on_output(i, ro.output)
                now = time.perf_counter()
                if use_tqdm and now - last > 0.5:
                    rate = (eng.counters["output_tokens"] - tok0) / (now - t0)
                    bar.set_postfix_str(f"{rate:.0f} tok/s, {eng.num_running} running, {eng.num_waiting} waiting",
                                        refresh=False)
                    last = now
        except BaseException as e:
            if isinstance(e, TPError) or eng.tp.enabled:   # the TP group is shut down: no more steps
                raise
            for rid in index:
                eng.abort(rid)
            while eng.has_unfinished():
                eng.step()
            raise
        finally:
            bar.close()

    def _record_stats(self, c0: dict, dt: float, outputs: list, n_requests: int, use_tqdm: bool) -> None:
        eng = self.engine
        delta = {k: eng.counters[k] - c0.get(k, 0) for k in ("steps", "prefill_tokens", "output_tokens")}
        self.stats = dict(steps=delta["steps"], seconds=dt, prefill_tokens=delta["prefill_tokens"],
                          output_tokens=delta["output_tokens"],
                          output_tok_per_s=delta["output_tokens"] / dt if dt else 0.0,
                          preemptions=sum(o.num_preemptions for o in outputs if o is not None),
                          peak_pages_used=eng.counters["peak_pages_used"],
                          prefix_hit_pages=eng.block_manager.num_prefix_hits)
        if use_tqdm:
            print(f"generate: {n_requests} requests, {delta['output_tokens']} output tokens in {dt:.2f}s "
                  f"({self.stats['output_tok_per_s']:.1f} tok/s), {delta['steps']} steps, "
                  f"{self.stats['preemptions']} preemptions, peak {self.stats['peak_pages_used']}/"
                  f"{eng.num_pages} pages", file=sys.stderr)


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")
