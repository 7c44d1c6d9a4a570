"""`LLMEngine`: the online engine. Requests join and leave the running batch between steps.

    engine = LLMEngine(EngineConfig(model="ckpt/", device="cuda"))
    rid = engine.add_request("What is 2+2?", SamplingParams(max_thinking_tokens=512, num_wait=1))
    while engine.has_unfinished():
        for out in engine.step():          # RequestOutput: new tokens, and the result when finished
            ...
    engine.abort(rid)                      # frees the request's pages and slot at once

How a request flows: `add_request` checks it, tokenizes it (the s1 prompt ends in
"<|im_start|>think") and turns its SamplingParams into token-id rules (s1/infer/budget.py) -> the
scheduler queues it; `step()` = schedule (prefill newcomers or decode the running batch, paging
and preempting as needed) -> runner (one forward + one `sample_and_force`: sampling and budget
forcing on the device) -> postprocess (the scheduler applies the device result: tokens, counters,
finished requests) -> RequestOutputs. On CUDA the result is copied back asynchronously and applied
one step later, so the GPU never waits for the host (a finished request may run one extra step
as a DONE row, whose token is ignored).

Bad requests (empty prompt, prompt too long for the context or the whole cache, invalid
SamplingParams, unknown stop token, extension too long) raise ValueError from `add_request`.

Tensor parallelism (`EngineConfig.tensor_parallel_size` N > 1, one process per rank under torchrun,
or `tp=` a TPGroup): each rank loads its shard (s1/infer/tensor_parallel.py), sizes its KV cache with
its local KV heads, and the ranks agree at start-up on the number of pages (the minimum) and on
the generator that seeds requests without a seed (rank 0's). Every rank then runs the same
scheduler, block manager and budget tables on the same requests, so they take identical steps;
the model returns local logits [B, V/N] and the sampler reduces per-rank winners in one
all-gather (s1/infer/budget.py). Every rank returns the outputs (callers write on rank 0). A
collective that fails in a step (a peer exited or hung) raises TPError naming the step.
"""
from __future__ import annotations

import collections
import itertools
import math
import os

import torch

from s1 import kernels
from s1.common import profiling
from s1.infer.block_manager import BlockManager
from s1.infer.budget import BudgetState, RequestRules, SpecialTokens, StepResult
from s1.infer.config import EngineConfig
from s1.infer.paged_cache import PagedKVCache, StepMeta, kv_bytes_per_token
from s1.infer.request import GenerationOutput, RequestOutput, Sequence
from s1.infer.runner import ModelRunner
from s1.infer.sampling import AUTO, SamplingParams
from s1.infer.scheduler import Scheduler
from s1.infer.tensor_parallel import TPGroup, cache_config, init_tensor_parallel, shard_model

AUTO_MARGIN = 100     # s1's "auto" cap leaves 100 tokens for the answer


def _tensor_parallel_group(cfg: EngineConfig, tp: TPGroup | None, device: torch.device) -> TPGroup:
    """The engine's TP group: `tp` as given (its size must be the config's), else joined from
    torchrun's environment (`init_tensor_parallel`) when tensor_parallel_size > 1, else a no-op."""
    n = cfg.tensor_parallel_size
    if tp is not None:
        if n not in (1, tp.world_size):
            raise ValueError(f"tensor_parallel_size={n} but the given TP group has {tp.world_size} ranks")
        return tp
    if n == 1:
        return TPGroup()
    import torch.distributed as dist
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    if world % n:
        raise ValueError(f"tensor_parallel_size={n} needs one process per rank: launch {n} (or a multiple) "
                         f"with torchrun, e.g. `torchrun --nproc-per-node {n} -m s1.infer --tensor-parallel {n} ...`; "
                         f"this world has {world} process(es)")
    return init_tensor_parallel(n, backend="gloo" if device.type == "cpu" else "nccl")


class Prepared:
    """A checked, tokenized request, before it joins the engine (see LLMEngine.prepare)."""

    def __init__(self, text: str, ids: list[int], params: SamplingParams, thinking: bool):
        self.text, self.ids, self.params, self.thinking = text, ids, params, thinking


class LLMEngine:
    def __init__(self, config: EngineConfig | None = None, *, model=None, tokenizer=None, tp: TPGroup | None = None):
        """tp: this rank's tensor-parallel group (s1/infer/tensor_parallel.py::init_tensor_parallel);
        default: joined from torchrun's environment when config.tensor_parallel_size > 1."""
        cfg = config or EngineConfig()
        self.config = cfg
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r}: this PyTorch build has no CUDA device available")
        self.tp = tp = _tensor_parallel_group(cfg, tp, self.device)
        if tp.enabled and self.device.type == "cuda":
            self.device = tp.device                                # cuda:LOCAL_RANK
        dtype = None if cfg.dtype is None else getattr(torch, cfg.dtype)
        if model is None:
            if cfg.model is None:
                raise ValueError("the engine needs a checkpoint folder (EngineConfig.model) or a model object")
            from s1.infer.tensor_parallel import load_model
            model = load_model(cfg.model, device=self.device, dtype=dtype, tp=tp)   # this rank's shard only
        else:
            if dtype is not None:
                model = model.to(dtype)
            if tp.enabled and getattr(model, "tp", None) is None:
                model = shard_model(model, tp)
        self.model = model.to(self.device).eval()
        if tokenizer is None:
            tok_dir = cfg.tokenizer or cfg.model
            if tok_dir is None or not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
                raise ValueError(f"no tokenizer.json in {tok_dir!r}: give the tokenizer folder "
                                 "(EngineConfig.tokenizer, `--tokenizer DIR` on the command line)")
            from s1.model.tokenizer import Tokenizer
            tokenizer = Tokenizer.from_pretrained(tok_dir)
        self.tokenizer = tokenizer
        self.model_config = mcfg = self.model.config
        self.dtype = next(self.model.parameters()).dtype
        self.ops = kernels.get_ops(self.device, cfg.kernels)          # the kernel switch, decided once
        self.max_model_len = min(cfg.max_model_len or mcfg.max_position_embeddings, mcfg.max_position_embeddings)
        self.thinking_format = tokenizer.thinking_format      # s1/model/thinking.py (set on the tokenizer)
        self.special = SpecialTokens.from_tokenizer(tokenizer, self.thinking_format)
        if self.special.vocab_size > mcfg.vocab_size:
            raise ValueError(f"tokenizer has {self.special.vocab_size} tokens but the model only "
                             f"{mcfg.vocab_size} embedding rows")
        self.page_size = cfg.page_size
        self.max_num_seqs = cfg.max_num_seqs
        self.kv_config = cache_config(mcfg, tp)                   # this rank's KV heads
        bytes_per_page = cfg.page_size * kv_bytes_per_token(self.kv_config, self.dtype)
        num_pages = cfg.num_pages
        if num_pages is None:
            if self.device.type == "cuda":
                num_pages = self._pages_from_free_memory(cfg.gpu_memory_utilization, bytes_per_page)
            else:  # CPU: at most 1 GiB, at most a full context for every sequence slot
                per_seq = math.ceil(self.max_model_len / cfg.page_size)
                num_pages = max(per_seq, min((1 << 30) // bytes_per_page, per_seq * cfg.max_num_seqs))
        if tp.enabled:   # one scheduler on every rank: all must hold the same pages
            with tp.guard("agreeing on the KV-cache size"):
                num_pages = min(v[0] for v in tp.all_gather_ints([num_pages]))
        if num_pages < 1:
            raise ValueError(f"no room for the KV cache (num_pages={num_pages}): lower max_model_len or "
                             "max_num_batched_tokens, or raise gpu_memory_utilization")
        self.num_pages = num_pages
        self.cache = PagedKVCache(self.kv_config, num_pages, cfg.page_size, self.device, self.dtype)
        self.budget = BudgetState(cfg.max_num_seqs, self.special, self.device, self.ops,
                                  tp=tp if tp.enabled else None, model_vocab_size=mcfg.vocab_size)
        self.runner = ModelRunner(self.model, self.cache, self.budget, self.ops, cfg.max_num_seqs,
                                  self.max_model_len, self.device,
                                  use_cuda_graphs=not cfg.enforce_eager)
        self.block_manager = BlockManager(num_pages, cfg.page_size, cfg.enable_prefix_caching,
                                          on_page=self.runner.note_page)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens,
                                   self.max_model_len, num_slots=cfg.max_num_seqs)
        self.async_output = (self.device.type == "cuda") if cfg.async_output is None else cfg.async_output
        self._pending: collections.deque = collections.deque()     # steps whose results are in flight
        self._aborted: list[RequestOutput] = []
        self._requests: dict[object, Sequence] = {}
        self._ids = itertools.count()
        seed0 = int.from_bytes(os.urandom(8), "little") >> 2
        if tp.enabled:   # requests without a seed draw from this generator: the same draws on every rank
            with tp.guard("agreeing on the seed generator"):
                seed0 = tp.all_gather_ints([seed0])[0][0]
                tp.check_peers()
        self._seed_rng = torch.Generator().manual_seed(seed0)
        self.counters = collections.Counter()
        self.consecutive_step_failures = 0    # steps failed in a row (0 after any step that ran)
        self.last_step_error: str | None = None

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the KV cache, the CUDA graphs and their pools, the device tables (idempotent)."""
        if self.runner is not None:
            self.runner.close()
        self.runner = self.cache = self.budget = self.scheduler = self.block_manager = None
        self.model = None
        self._pending.clear()
        self._requests.clear()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    @property
    def closed(self) -> bool:
        return self.runner is None

    # ------------------------------------------------------------------ KV sizing
    @torch.inference_mode()
    def _pages_from_free_memory(self, fraction: float, bytes_per_page: int) -> int:
        """Warm up with the largest prefill the scheduler can issue, through the engine's own model
        call (a one-page cache, no K/V written), then give the KV cache what is left of `fraction`
        of the GPU (nano-vllm's rule), keeping room for the sampler. The largest prefill is
        max(budget, one full-context sequence): a longer sequence is admitted alone."""
        cfg = self.config
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        seq_len = self.max_model_len
        nseq = 1 if seq_len >= cfg.max_num_batched_tokens else \
            max(1, min(cfg.max_num_batched_tokens // seq_len, cfg.max_num_seqs))
        dev = self.device
        T = nseq * seq_len
        cu = torch.arange(0, T + 1, seq_len, dtype=torch.int32, device=dev)
        probe = PagedKVCache(self.kv_config, 1, cfg.page_size, dev, self.dtype)
        probe.meta = StepMeta(is_prefill=True, slot_mapping=torch.full((T,), -1, dtype=torch.int64, device=dev),
                              cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=seq_len, max_seqlen_k=seq_len)
        pos = torch.arange(seq_len, device=dev).repeat(nseq)
        self.model(torch.zeros(T, dtype=torch.int64, device=dev), pos, kv_cache=probe,
                   logits_indices=(cu[1:] - 1).long(), ops=self.ops)
        del probe
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        peak, current = stats["allocated_bytes.all.peak"], stats["allocated_bytes.all.current"]
        # fp32 [B, V] sampler temporaries and the CUDA-graph pools (captured later, lazily); under
        # tensor parallelism V is this rank's vocabulary shard, except for top-k / top-p batches
        # (their sort pre-pass gathers the full logits)
        sampling_reserve = 16 * cfg.max_num_seqs * -(-self.model_config.vocab_size // self.tp.world_size) * 4
        avail = total * fraction - (total - free) - (peak - current) - sampling_reserve
        return int(avail // bytes_per_page)

    # ------------------------------------------------------------------ requests
    def prepare(self, prompt, params: SamplingParams | None = None, raw: bool = False) -> Prepared:
        """Check and tokenize one request; ValueError naming the problem."""
        if self.closed:
            raise RuntimeError("the engine is closed")
        p = SamplingParams() if params is None else params
        if not isinstance(p, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(p).__name__}")
        p.validate()
        if p.logprobs is not None and self.tp.enabled:
            raise ValueError("logprobs are not available under tensor parallelism (the logits are vocabulary shards)")
        tok = self.tokenizer
        if isinstance(prompt, str):
            if not prompt.strip() and not raw:
                raise ValueError("empty prompt")
            if raw:
                text = prompt
            elif p.thinking:
                text = tok.render_prompt(prompt, start=p.thinking_start)
            else:   # plain chat: the template's own prompt (Qwen3: enable_thinking=False)
                text = tok.render_prompt(prompt, thinking=False)
            ids, thinking = tok.encode(text), p.thinking and ((not raw) or p.thinking_rules_set())
        elif isinstance(prompt, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            ids = list(prompt)
            bad = [i for i in ids if not 0 <= i < self.special.vocab_size]
            if bad:
                raise ValueError(f"prompt token ids outside the vocabulary [0, {self.special.vocab_size}): {bad[:5]}")
            text, thinking = tok.decode(ids), p.thinking and p.thinking_rules_set()
        else:
            raise ValueError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("empty prompt")
        limit = self.scheduler.max_len
        if len(ids) + 1 > limit:
            what = "the model context" if limit == self.max_model_len else "the whole KV cache"
            raise ValueError(f"prompt has {len(ids)} tokens; {what} holds {limit} "
                             f"(prompt + at least one generated token must fit)")
        return Prepared(text, ids, p, thinking)

    def _rules(self, prep: Prepared, auto_prompt_len: int | None) -> tuple[RequestRules, int | None, bool]:
        p, tok, sp = prep.params, self.tokenizer, self.special
        stop_ids = []
        for name in p.stop:
            try:
                stop_ids.append(tok.token_id(name))
            except KeyError:
                raise ValueError(f"unknown stop token {name!r}: not a single token of the tokenizer") from None
        if not p.ignore_eos:
            stop_ids = sp.answer_stop_ids + stop_ids
        end_text = p.end_thinking if p.end_thinking is not None else self.thinking_format.forced_end
        end_skip = end_text.startswith("\n")
        end_ids = ([sp.newline_id] + tok.encode(end_text[1:])) if end_skip else tok.encode(end_text)
        if sp.has_pair_end and prep.thinking and (p.num_wait > 0 or p.min_thinking_tokens > 0):
            raise ValueError("num_wait / min_thinking_tokens need one-token ends of thinking; this thinking format "
                             f"ends on two tokens ({', '.join(map(repr, self.thinking_format.stops))}), as s1's "
                             "step-conditional run (s1 refuses min_tokens there too)")
        cap = p.max_thinking_tokens
        if cap == AUTO:   # s1: context - longest prompt - forced end (without its "\n") - 100
            longest = max(auto_prompt_len or 0, len(prep.ids))
            cap = max(0, self.scheduler.max_len - longest - (len(end_ids) - int(end_skip)) - AUTO_MARGIN)
        room = self.scheduler.max_len - len(prep.ids)              # the context bounds every output
        seed = p.seed if p.seed is not None else int(torch.randint(0, 2 ** 62, (), generator=self._seed_rng))
        rules = RequestRules(
            thinking=prep.thinking, max_think=cap if prep.thinking else None, min_think=p.min_thinking_tokens,
            num_wait=p.num_wait, extension_ids=tok.encode(p.extension) if p.extension else [],
            end_ids=end_ids, end_skip_newline=end_skip, max_answer=p.max_answer_tokens,
            max_tokens=room if p.max_tokens is None else min(p.max_tokens, room), stop_ids=stop_ids,
            temperature=0.0 if p.greedy else float(p.temperature), top_k=p.top_k, top_p=p.top_p, seed=seed,
            last_prompt_token=prep.ids[-1])
        starts_in_answer = self.budget.check(rules)
        return rules, (cap if prep.thinking else None), starts_in_answer

    def add_prepared(self, prep: Prepared, request_id=None, auto_prompt_len: int | None = None,
                     stream: bool = True):
        """Queue a prepared request; `auto_prompt_len` = the longest prompt of its batch, which
        s1's "auto" thinking cap subtracts (default: this prompt). `stream`: report every new
        token (else only the finished request). Returns the request id."""
        if self.closed:
            raise RuntimeError("the engine is closed")
        rules, cap, starts_in_answer = self._rules(prep, auto_prompt_len)
        rid = next(self._ids) if request_id is None else request_id
        if rid in self._requests:
            raise ValueError(f"request id {rid!r} is already in use")
        seq = Sequence(rid, prep.ids, self.page_size, rules=rules, prompt_text=prep.text, max_thinking_tokens=cap,
                       starts_in_answer=starts_in_answer, stream=stream, logprobs=prep.params.logprobs)
        self._requests[rid] = seq
        self.scheduler.add(seq)
        return rid

    def add_request(self, prompt, params: SamplingParams | None = None, *, raw: bool = False,
                    request_id=None, stream: bool = True):
        return self.add_prepared(self.prepare(prompt, params, raw), request_id, stream=stream)

    def abort(self, request_id) -> bool:
        """Finish a request now ("abort"): its pages and device slot are freed at once. False if
        unknown or already finished."""
        seq = self._requests.get(request_id)
        if seq is None or seq.is_finished:
            return False
        self.scheduler.finish(seq, "abort")
        self._aborted.append(self._report(seq, 0))
        return True

    def has_unfinished(self) -> bool:
        return bool(self._aborted) or bool(self._pending) or self.scheduler.has_unfinished()

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # ------------------------------------------------------------------ one step
    def step(self) -> list[RequestOutput]:
        """Schedule -> run -> postprocess. Returns what the requests produced (see RequestOutput).
        Tensor parallel: every rank runs the same step (same scheduler decisions, same sampled
        tokens); a collective that fails because a peer exited or hung raises TPError."""
        rec = profiling.active()            # phase ranges / timeline (s1/common/profiling.py): no-ops when off
        rec.step_begin()
        try:
            if not self.tp.enabled:
                return self._step(rec)
            with self.tp.guard(f"engine step {self.counters['steps'] + 1}"):
                return self._step(rec)
        finally:
            rec.step_end()

    def _step(self, rec=profiling.OFF) -> list[RequestOutput]:
        outputs, self._aborted = self._aborted, []
        sched = self.scheduler
        with rec.phase("schedule"):
            seqs, is_prefill = sched.schedule()                  # 1. schedule
            failed = self._admit(sched)
        if failed:                                               # those fail alone (error outputs)
            outputs += [self._report(s, 0) for s in failed]
            seqs = [s for s in seqs if not s.is_finished]
            if not seqs:
                return outputs
        if not seqs:
            if self._pending:
                return outputs + self._process(self._pending.popleft(), rec)
            if sched.has_unfinished():
                raise RuntimeError("scheduler made no progress (bug): "
                                   f"{len(sched.waiting)} waiting, {len(sched.running)} running")
            return outputs
        n_tokens = len(seqs)
        if is_prefill:
            n_tokens = sum(s.num_tokens - s.num_cached_tokens for s in seqs)
            self.counters["prefill_tokens"] += n_tokens
            self.counters["prefill_cached_tokens"] += sum(s.num_cached_tokens for s in seqs)
        rec.note(kind="prefill" if is_prefill else "decode", batch=len(seqs), tokens=n_tokens)
        try:
            rec.device_begin(self.device)
            result = self.runner.run(seqs, is_prefill)           # 2. forward + sample_and_force
            rec.device_end(self.device)
            sched.launched(seqs)
            self.counters["steps"] += 1
            self.counters["peak_pages_used"] = max(self.counters["peak_pages_used"], self.block_manager.num_used)
            with rec.phase("read_back"):
                self._pending.append(self._read_back(seqs, result) + (self.runner.step_logprobs,))
            # 3. postprocess: asynchronous mode keeps one step in flight, otherwise applies at once
            while len(self._pending) > (1 if self.async_output else 0):
                outputs += self._process(self._pending.popleft(), rec)
        except Exception as e:
            if self.tp.enabled:          # the ranks must stay in lockstep: stop them all (TPGroup.guard)
                raise
            outputs += self._fail_step(seqs, is_prefill, e)
        else:
            self.consecutive_step_failures = 0
        return outputs

    def _fail_step(self, seqs: list[Sequence], is_prefill: bool, e: Exception) -> list[RequestOutput]:
        """A step failed as a whole (out of memory, a kernel error, a bug): its requests -- and
        those of a step still in flight -- finish with "error" and free their pages and slots;
        the others and the engine go on from a clean state (every device row a later request
        uses is rewritten when it is admitted). `consecutive_step_failures` lets a server stop
        trusting an engine that fails every step (a dead device)."""
        import traceback
        self.counters["step_failures"] += 1
        self.consecutive_step_failures += 1
        self.last_step_error = "".join(traceback.format_exception_only(type(e), e)).strip()
        msg = f"the engine step failed: {self.last_step_error}"
        failed = self.scheduler.fail(seqs, msg, is_prefill)
        while self._pending:
            failed += self.scheduler.fail(self._pending.popleft()[0], msg, False)
        return [self._report(s, 0) for s in failed]

    def _admit(self, sched: Scheduler) -> list[Sequence]:
        """Write the rules of requests admitted for the first time into their device slots.
        Returns the requests that failed here (each alone: an error output, pages and slot freed)."""
        admitted, sched.admitted = sched.admitted, []
        if not admitted:
            return []
        try:
            self.budget.admit([s.slot for s in admitted], [s.rules for s in admitted])
            return []
        except Exception:
            if self.tp.enabled:
                raise
        failed = []
        for s in admitted:                  # find the culprit(s): one request at a time
            try:
                self.budget.admit([s.slot], [s.rules])
            except Exception as e:
                sched.fail([s], f"the request could not be admitted: {e!r}", True)
                failed.append(s)
        return failed

    def _read_back(self, seqs, result: torch.Tensor) -> tuple:
        """(seqs, host copy of the step result, event to wait on or None). On CUDA the copy is
        asynchronous into pinned memory, so the host never waits for the GPU here."""
        if self.async_output and result.is_cuda:
            host = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
            host.copy_(result, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return seqs, host, event
        return seqs, result.cpu(), None

    def _process(self, item, rec=profiling.OFF) -> list[RequestOutput]:
        seqs, host, event, lp = item
        if event is not None:
            with rec.phase("wait_device"):
                event.synchronize()
        with rec.phase("postprocess"):
            res = StepResult.from_host(host)
            self.counters["output_tokens"] += sum(res.emitted)
            if lp is not None:          # some request of this step asked for logprobs (ModelRunner.run)
                token_lp, top_ids, top_lp = (t.tolist() for t in lp)
                for i, s in enumerate(seqs):
                    if s.logprobs is not None and res.emitted[i] and not s.is_finished:
                        k = s.logprobs
                        s.output_logprobs.append((token_lp[i], top_ids[i][:k], top_lp[i][:k]))
            return [self._report(s, 1) for s in self.scheduler.postprocess(seqs, res)]

    def _report(self, seq: Sequence, n_new: int) -> RequestOutput:
        """What a step produced for `seq`: its newest n_new tokens (0 or 1; an aborted request
        reports none), and the final output once it has finished."""
        n_new = min(n_new, len(seq.output_ids))
        out = None
        if seq.is_finished:
            out = self.make_output(seq)
            self._requests.pop(seq.request_id, None)
        lps = None
        if seq.logprobs is not None:
            lps = seq.output_logprobs[len(seq.output_logprobs) - n_new:] if n_new else []
        return RequestOutput(request_id=seq.request_id, new_token_ids=seq.output_ids[len(seq.output_ids) - n_new:],
                             num_output_tokens=len(seq.output_ids), num_thinking_tokens=seq.num_thinking_tokens,
                             answer_start=seq.answer_start, finished=seq.is_finished, output=out, new_logprobs=lps)

    def make_output(self, s: Sequence) -> GenerationOutput:
        """The final record of a request: thinking text (its first num_thinking_tokens tokens),
        answer text (after "<|im_start|>answer", one leading newline dropped), the full text."""
        tok, r = self.tokenizer, s.rules
        out = s.output_ids
        body = out[:-1] if out and s.finish_reason == "stop" and out[-1] in r.stop_ids else out
        if r.thinking:
            n = min(s.num_thinking_tokens, len(body))
            think_text = tok.decode(body[:n])
            rest = tok.decode(body[n:])
            answer = tok.thinking_format.answer_of(rest)
        else:
            think_text, answer = "", tok.decode(body)
        return GenerationOutput(prompt=s.prompt_text, thinking=think_text, answer=answer, text=tok.decode(out),
                                output_token_ids=list(out),
                                num_thinking_tokens=s.num_thinking_tokens if r.thinking else 0,
                                num_waits_used=s.num_waits_used, finish_reason=s.finish_reason,
                                prompt_token_ids=list(s.prompt_ids), num_preemptions=s.num_preemptions,
                                max_thinking_tokens=s.max_thinking_tokens, request_id=s.request_id,
                                error=getattr(s, "error", None),
                                logprobs=(list(s.output_logprobs) if getattr(s, "logprobs", None) is not None
                                          else None))
