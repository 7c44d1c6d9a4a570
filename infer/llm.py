"""`LLM`: the offline engine (paged KV cache + continuous batching + on-device budget forcing).

    from infer import LLM, SamplingParams
    llm = LLM("ckpt/", device="cuda")
    outs = llm.generate(["What is 2+2?"], SamplingParams(max_thinking_tokens=512, num_wait=1))

Prompts: strings are user questions rendered with `tokenizer.render_prompt` (s1 format, ending in
"<|im_start|>think\\n"); raw=True passes already-rendered strings; token-id lists are used as is
(always raw). When budget forcing is on for raw prompts: see infer/sampling.py.

Bad requests (empty prompt, prompt too long for the context or the whole cache, invalid
SamplingParams, unknown stop token) come back with finish_reason "error" and a message in
`.error`; the other requests run normally.

The host loop per step: schedule -> runner (forward, sample, budget rules on device) -> read back
[token, emitted, done, finish, thinking used, waits used] per row. On CUDA that read-back is
asynchronous (pinned buffer + event) and processed one step later, so the GPU never waits on
the host; a finished sequence may thus run one wasted step (its device state is DONE: the
extra token is ignored).
"""
from __future__ import annotations

import math
import os
import time

import torch
from tqdm.auto import tqdm

from infer.block_manager import BlockManager
from infer.budget import FINISH_REASONS, BudgetState, RequestRules, SpecialTokens
from infer.paged_cache import PagedKVCache, kv_bytes_per_token
from infer.request import GenerationOutput, Sequence, Status
from infer.runner import ModelRunner
from infer.sampling import SamplingParams
from infer.scheduler import Scheduler

ANSWER_DELIM = "<|im_start|>answer\n"


class LLM:
    def __init__(self, model_dir=None, device="cpu", dtype=None, page_size=16, max_num_seqs=256,
                 max_num_batched_tokens=8192, gpu_memory_fraction=0.9, num_pages=None,
                 enable_prefix_caching=True, model=None, tokenizer=None, max_model_len=None,
                 enforce_eager=False, async_output=None):
        self.device = torch.device(device)
        if model is None:
            if model_dir is None:
                raise ValueError("LLM needs model_dir or a model object")
            from model.loading import load_model
            model = load_model(model_dir, device=self.device, dtype=dtype)
        elif dtype is not None:
            model = model.to(dtype)
        model = model.to(self.device).eval()
        if tokenizer is None:
            if model_dir is None or not os.path.exists(os.path.join(model_dir, "tokenizer.json")):
                raise ValueError(f"no tokenizer.json in {model_dir!r}: pass tokenizer=Tokenizer.from_pretrained(...)")
            from model.tokenizer import Tokenizer
            tokenizer = Tokenizer.from_pretrained(model_dir)
        self.model, self.tokenizer = model, tokenizer
        self.cfg = model.config
        self.dtype = next(model.parameters()).dtype
        if page_size < 1 or max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("page_size, max_num_seqs and max_num_batched_tokens must be >= 1")
        if not 0 < gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction={gpu_memory_fraction} must lie in (0, 1]")
        self.page_size = page_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = min(max_model_len or self.cfg.max_position_embeddings,
                                 self.cfg.max_position_embeddings)
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        if self.special.vocab_size > self.cfg.vocab_size:
            raise ValueError(f"tokenizer has {self.special.vocab_size} tokens but the model only "
                             f"{self.cfg.vocab_size} embedding rows")

        bytes_per_page = page_size * kv_bytes_per_token(self.cfg, self.dtype)
        if num_pages is None:
            if self.device.type == "cuda":
                num_pages = self._pages_from_free_memory(gpu_memory_fraction, bytes_per_page)
            else:  # CPU: at most 1 GiB, at most a full context for every sequence slot
                per_seq = math.ceil(self.max_model_len / page_size)
                num_pages = max(per_seq, min((1 << 30) // bytes_per_page, per_seq * max_num_seqs))
        if num_pages < 1:
            raise ValueError(f"no room for the KV cache (num_pages={num_pages})")
        self.num_pages = num_pages
        self.cache = PagedKVCache(self.cfg, num_pages, page_size, self.device, self.dtype)
        self.block_manager = BlockManager(num_pages, page_size, enable_prefix_caching)
        self.runner = ModelRunner(model, self.cache, max_num_seqs, self.max_model_len, self.device,
                                  use_cuda_graphs=not enforce_eager)
        self.async_output = (self.device.type == "cuda") if async_output is None else async_output
        self.stats: dict = {}
        self.budget: BudgetState | None = None  # kept across calls: CUDA graphs point at its tensors

    # ------------------------------------------------------------------ KV sizing
    @torch.inference_mode()
    def _pages_from_free_memory(self, fraction: float, bytes_per_page: int) -> int:
        """Warm up with the largest prefill the scheduler can issue, then give the KV cache what
        is left of `fraction` of the GPU (nano-vllm's rule), keeping room for sampling buffers.
        The largest prefill is max(budget, one full-context sequence): a sequence longer than
        max_num_batched_tokens is admitted alone (infer/scheduler.py)."""
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if self.max_model_len >= self.max_num_batched_tokens:
            seq_len, nseq = self.max_model_len, 1
        else:
            seq_len = self.max_model_len
            nseq = max(1, min(self.max_num_batched_tokens // seq_len, self.max_num_seqs))
        ids = torch.zeros(nseq * seq_len, dtype=torch.int64, device=self.device)
        cu = torch.arange(0, (nseq + 1) * seq_len, seq_len, dtype=torch.int32, device=self.device)
        self.model(ids, cu_seqlens=cu, max_seqlen=seq_len, logits_indices=(cu[1:] - 1).long())
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        peak, current = stats["allocated_bytes.all.peak"], stats["allocated_bytes.all.current"]
        # fp32 [B, V] sampler temporaries and the CUDA-graph pools (captured later, lazily)
        sampling_reserve = 16 * self.max_num_seqs * self.cfg.vocab_size * 4
        avail = total * fraction - (total - free) - (peak - current) - sampling_reserve
        return int(avail // bytes_per_page)

    # ------------------------------------------------------------------ requests
    def _prepare(self, prompt, p: SamplingParams, raw: bool):
        """-> (prompt_text, ids, rules) or raises ValueError with the problem."""
        tok = self.tokenizer
        if not isinstance(p, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(p).__name__}")
        p.validate()
        if isinstance(prompt, str):
            if not prompt.strip() and not raw:
                raise ValueError("empty prompt")
            text = prompt if raw else tok.render_prompt(prompt)
            ids = tok.encode(text)
            is_raw = raw
        elif isinstance(prompt, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            ids = list(prompt)
            bad = [i for i in ids if not 0 <= i < self.special.vocab_size]
            if bad:
                raise ValueError(f"prompt token ids outside the vocabulary [0, {self.special.vocab_size}): {bad[:5]}")
            text = tok.decode(ids)
            is_raw = True
        else:
            raise ValueError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("empty prompt")
        limit = min(self.max_model_len, self.num_pages * self.page_size)
        if len(ids) + 1 > limit:
            what = ("the model context" if limit == self.max_model_len else "the whole KV cache")
            raise ValueError(f"prompt has {len(ids)} tokens; {what} holds {limit} "
                             f"(prompt + at least one generated token must fit)")
        stop_ids = []
        for name in p.stop:
            try:
                stop_ids.append(tok.token_id(name))
            except KeyError:
                raise ValueError(f"unknown stop token {name!r}: not a single token of the tokenizer") from None
        if not p.ignore_eos:
            stop_ids = self.special.answer_stop_ids + stop_ids
        seed = p.seed if p.seed is not None else int(torch.randint(0, 2 ** 62, ()).item())
        rules = RequestRules(
            thinking=(not is_raw) or p.thinking_rules_set(),
            max_think=p.max_thinking_tokens, min_think=p.min_thinking_tokens, num_wait=p.num_wait,
            extension_ids=tok.encode(p.extension) if p.extension else [],
            end_ids=tok.encode(p.end_thinking), max_answer=p.max_answer_tokens,
            max_tokens=p.max_tokens, stop_ids=stop_ids, temperature=p.temperature,
            top_k=p.top_k, top_p=p.top_p, seed=seed)
        return text, ids, rules

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None,
                 raw: bool = False, use_tqdm: bool = True) -> list[GenerationOutput]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            raise ValueError("prompts must be a list (of strings or of token-id lists)")
        params = params if params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")

        outputs: list[GenerationOutput | None] = [None] * len(prompts)
        valid, texts, rules, thinking_mode = [], {}, [], {}
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            try:
                text, ids, r = self._prepare(prompt, p, raw)
            except ValueError as e:
                outputs[i] = GenerationOutput(
                    prompt=prompt if isinstance(prompt, str) else str(prompt), thinking="", answer="",
                    text="", output_token_ids=[], num_thinking_tokens=0, num_waits_used=0,
                    finish_reason="error", error=f"request {i}: {e}")
                continue
            texts[i] = text
            thinking_mode[i] = r.thinking
            valid.append((i, ids))
            rules.append(r)
        if not valid:
            return outputs

        if self.budget is None or not self.budget.load(rules):
            self.budget = BudgetState(rules, self.special, self.device,
                                      capacity=max(len(rules), self.max_num_seqs))
        budget = self.budget
        sched = Scheduler(self.block_manager, self.max_num_seqs, self.max_num_batched_tokens,
                          self.max_model_len)
        seqs = []
        for row, (i, ids) in enumerate(valid):
            s = Sequence(row, ids, self.page_size)
            seqs.append(s)
            sched.add(s)

        bar = tqdm(total=len(seqs), desc="generate", disable=not use_tqdm, dynamic_ncols=True)
        pending: list[tuple] = []
        t0, n_steps, n_prefill_tok, n_out = time.perf_counter(), 0, 0, 0
        peak_pages = 0

        def process(item) -> None:
            nonlocal n_out
            step_seqs, info, event = item
            if event is not None:
                event.synchronize()
            tok, emitted, done, fin, tu, wu = info.tolist()
            for j, s in enumerate(step_seqs):
                if s.status == Status.FINISHED:
                    continue
                if emitted[j]:
                    s.output_ids.append(tok[j])
                    n_out += 1
                s.num_thinking_tokens, s.num_waits_used = tu[j], wu[j]
                if done[j]:
                    sched.finish(s, FINISH_REASONS[fin[j]])
                elif s.num_known_tokens >= sched.max_len and s.num_known_tokens == s.num_tokens:
                    sched.finish(s, "length")
                else:
                    continue
                bar.update(1)

        try:
            while not sched.is_finished():
                step_seqs, is_prefill = sched.schedule()
                if not step_seqs:
                    if not pending:
                        raise RuntimeError("scheduler made no progress (bug): "
                                           f"{len(sched.waiting)} waiting, {len(sched.running)} running")
                    process(pending.pop(0))
                    continue
                if is_prefill:
                    n_prefill_tok += sum(s.num_tokens - s.num_cached_tokens for s in step_seqs)
                info = self.runner.run(step_seqs, is_prefill, budget)
                for s in step_seqs:
                    s.num_tokens += 1
                n_steps += 1
                peak_pages = max(peak_pages, self.block_manager.num_used)
                if self.async_output and info.is_cuda:
                    host = torch.empty(info.shape, dtype=info.dtype, pin_memory=True)
                    host.copy_(info, non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record()
                    pending.append((step_seqs, host, ev))
                else:
                    pending.append((step_seqs, info.cpu(), None))
                # asynchronous mode keeps one step in flight; otherwise process at once
                while len(pending) > (1 if self.async_output else 0):
                    process(pending.pop(0))
            while pending:
                process(pending.pop(0))
        finally:  # an exception (or Ctrl-C) must not leak pages into the next call
            for s in seqs:
                if s.block_table:
                    self.block_manager.deallocate(s)
        bar.close()
        dt = time.perf_counter() - t0
        self.stats = dict(steps=n_steps, seconds=dt, prefill_tokens=n_prefill_tok, output_tokens=n_out,
                          output_tok_per_s=n_out / dt if dt else 0.0, preemptions=sched.num_preemptions,
                          peak_pages_used=peak_pages, prefix_hit_pages=self.block_manager.num_prefix_hits)
        if use_tqdm:
            print(f"generate: {len(seqs)} requests, {n_out} output tokens in {dt:.2f}s "
                  f"({self.stats['output_tok_per_s']:.1f} tok/s), {n_steps} steps, "
                  f"{sched.num_preemptions} preemptions, peak {peak_pages}/{self.num_pages} pages")

        for s, (i, _) in zip(seqs, valid):
            outputs[i] = self._make_output(texts[i], s, thinking_mode[i], rules[s.req_id])
        return outputs

    def _make_output(self, prompt_text: str, s: Sequence, thinking: bool, r: RequestRules) -> GenerationOutput:
        tok = self.tokenizer
        out = s.output_ids
        body = out[:-1] if out and out[-1] in r.stop_ids and s.finish_reason == "stop" else out
        if thinking:
            n = min(s.num_thinking_tokens, len(body))
            think_text = tok.decode(body[:n])
            rest = tok.decode(body[n:])
            k = rest.find(ANSWER_DELIM)
            answer = rest[k + len(ANSWER_DELIM):] if k >= 0 else rest
        else:
            think_text, answer = "", tok.decode(body)
        return GenerationOutput(prompt=prompt_text, thinking=think_text, answer=answer,
                                text=tok.decode(out), output_token_ids=list(out),
                                num_thinking_tokens=s.num_thinking_tokens if thinking else 0,
                                num_waits_used=s.num_waits_used, finish_reason=s.finish_reason,
                                prompt_token_ids=list(s.prompt_ids), num_preemptions=s.num_preemptions)
