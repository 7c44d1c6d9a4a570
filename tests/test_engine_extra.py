"""Engine checks the issue-4 audit found missing: raw prompts (API and `s1 generate --raw`), the
per-step token budget `max_num_batched_tokens`, preemption with prefix caching on (page
accounting included), the engine on Triton kernels for the whole forward (varlen prefill over
cached prefix pages included), and bench.decode's budget-forcing workload.

Oracle: naive full-recompute greedy decoding with our model (tests/test_engine.py's helpers and
fixtures: tiny random Qwen2 checkpoint, real Qwen2.5 tokenizer, page size 4).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from s1 import kernels
import s1.infer.engine
from s1.infer import LLM, SamplingParams
from s1.infer.scheduler import Scheduler
from tests.test_engine import (  # noqa: F401  (ckpt, model, tok, torch_backend are fixtures)
    ckpt, make_llm, model, naive_greedy, prompts_of, tok, torch_backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "What is 2+2?"
THINK_END_NAMES = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


class ForceTokenAt(torch.nn.Module):
    """The model, except that the token predicted for each absolute position in `positions` is
    `token` (its logit raised above every other): a model that "tries to end thinking" there.
    Works in the engine (positions / logits_indices given) and in naive_greedy (neither)."""

    def __init__(self, inner, token: int, positions):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.token = token
        self.targets = torch.tensor(sorted(positions), dtype=torch.int64)

    def forward(self, input_ids, positions=None, logits_indices=None, **kw):
        logits = self.inner(input_ids, positions, logits_indices=logits_indices, **kw)
        if positions is None:
            positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        pos = positions if logits_indices is None else positions[logits_indices]
        hit = torch.isin(pos + 1, self.targets.to(pos.device))  # row predicts position pos + 1
        logits[hit, self.token] = logits.max() + 10.0
        return logits


def think_end_ids(tok):
    return {tok.token_id(n) for n in THINK_END_NAMES}


# ============================================================================ 1. raw prompts
def test_raw_rendered_prompt_is_not_rerendered(model, tok):
    """A rendered prompt passed raw (string, or token ids) == the question passed normally: same
    prompt ids, same output, both equal to the naive reference of thinking 5 tokens -> forced end
    -> 3 answer tokens. Rendering the rendered prompt again (raw=False) gives other ids, so the
    equality is not vacuous."""
    llm = make_llm(model, tok)
    sp = SamplingParams(max_thinking_tokens=5, max_answer_tokens=3)
    rendered = tok.render_prompt(QUESTION)
    ids = tok.encode(rendered)
    raw_str, raw_ids = llm.generate([rendered, ids], sp, raw=True, use_tqdm=False)
    question, twice, ids_default = llm.generate([QUESTION, rendered, ids], sp, use_tqdm=False)
    assert twice.prompt_token_ids != ids and len(twice.prompt_token_ids) > len(ids)

    V = tok.vocab_size
    end = tok.encode(sp.end_thinking)
    think = naive_greedy(model, ids, 5, V)
    answer = naive_greedy(model, ids + think + end, 3, V)
    assert not think_end_ids(tok) & set(think + answer)  # no natural stop: the reference is exact
    expected = think + end + answer
    for o in (question, raw_str, raw_ids, ids_default):
        assert o.prompt_token_ids == ids
        assert o.output_token_ids == expected
        assert o.num_thinking_tokens == 5 and o.thinking == tok.decode(think)
        assert o.finish_reason == "length"
    assert question.prompt == raw_str.prompt == rendered
    assert twice.output_token_ids != expected


def test_raw_prompt_thinks_only_with_thinking_rules(model, tok):
    """The model is made to emit <|im_end|> at output index 3. A raw prompt without thinking
    rules is plain generation (stops there, no thinking); with max_thinking_tokens, num_wait or
    min_thinking_tokens it starts in the thinking phase (the end attempt becomes the answer
    delimiter / "Wait" / is masked out), as a question prompt always does."""
    rendered = tok.render_prompt(QUESTION)
    ids = tok.encode(rendered)
    k, V = 3, tok.vocab_size
    im_end = tok.token_id("<|im_end|>")
    forced = ForceTokenAt(model, im_end, [len(ids) + k])
    g = naive_greedy(forced, ids, k + 1, V)
    assert g[k] == im_end and not think_end_ids(tok) & set(g[:k])
    inner = naive_greedy(model, ids, 10, V)
    assert inner[:k] == g[:k] and not think_end_ids(tok) & set(inner)
    delim, ext = tok.encode("<|im_start|>answer"), tok.encode("Wait")

    plain = SamplingParams(max_tokens=10)
    capped = SamplingParams(max_thinking_tokens=8, max_answer_tokens=2)
    waits = SamplingParams(num_wait=1, max_tokens=10)
    minimum = SamplingParams(min_thinking_tokens=5, max_tokens=10)
    llm = make_llm(forced, tok)
    o_plain_str, o_plain_ids, o_capped, o_waits, o_min = llm.generate(
        [rendered, ids, rendered, ids, rendered], [plain, plain, capped, waits, minimum], raw=True,
        use_tqdm=False)
    o_question = llm.generate([QUESTION], plain, use_tqdm=False)[0]

    for o in (o_plain_str, o_plain_ids):  # plain generation: <|im_end|> is an answer stop
        assert o.output_token_ids == g[:k] + [im_end] and o.finish_reason == "stop"
        assert o.num_thinking_tokens == 0 and o.thinking == "" and o.answer == tok.decode(g[:k])
    pre = ids + g[:k]
    assert o_capped.output_token_ids == g[:k] + delim + naive_greedy(forced, pre + delim, 2, V)
    assert o_capped.num_thinking_tokens == k and o_capped.finish_reason == "length"
    assert o_waits.output_token_ids == g[:k] + ext + naive_greedy(forced, pre + ext, 10 - k - len(ext), V)
    assert o_waits.num_waits_used == 1 and o_waits.num_thinking_tokens == 10
    assert o_min.output_token_ids == inner and o_min.num_thinking_tokens == 10  # end masked out
    # the same plain params on a question prompt: thinking, so the attempt becomes the delimiter
    assert o_question.output_token_ids == g[:k] + delim + naive_greedy(forced, pre + delim, 10 - k - len(delim), V)
    assert o_question.num_thinking_tokens == k


def test_cli_generate_raw(ckpt, model, tok, tmp_path):
    """`s1 generate --raw`: the rendered prompt is passed unchanged (== the question without
    --raw, == the naive reference), and without thinking flags it is plain generation."""
    from s1.infer.cli import generate_main
    _, d = ckpt
    rendered = tok.render_prompt(QUESTION)
    ids = tok.encode(rendered)

    def run(name, *args):
        out = tmp_path / f"{name}.jsonl"
        rc = generate_main(["--model", str(d), "--dtype", "float32", "--device", "cpu", "--page-size", "4",
                            "--max-num-seqs", "4", "--no-progress", "--out", str(out), *args])
        assert rc == 0
        (row,) = [json.loads(line) for line in out.read_text().splitlines()]
        return row

    think_flags = ["--max-thinking-tokens", "4", "--max-answer-tokens", "3"]
    question = run("question", "--prompt", QUESTION, *think_flags)
    raw = run("raw", "--prompt", rendered, "--raw", *think_flags)
    plain = run("plain", "--prompt", rendered, "--raw", "--max-tokens", "6")

    V = tok.vocab_size
    think = naive_greedy(model, ids, 4, V)
    expected = think + tok.encode(SamplingParams().end_thinking)
    expected += naive_greedy(model, ids + expected, 3, V)
    assert question["output_token_ids"] == raw["output_token_ids"] == expected
    assert raw["prompt"] == rendered and raw["num_thinking_tokens"] == question["num_thinking_tokens"] == 4
    ref = naive_greedy(model, ids, 6, V)
    assert not think_end_ids(tok) & set(ref)
    assert plain["output_token_ids"] == ref and plain["finish_reason"] == "length"
    assert plain["num_thinking_tokens"] == 0 and plain["thinking"] == ""
    assert plain["answer"] == plain["text"] == tok.decode(ref)


# ============================================================================ 2. token budget
def _record_steps(llm):
    """Wrap the runner: record per step (is_prefill, tokens computed per sequence, prompt lens)."""
    steps, run = [], llm.runner.run

    def recording_run(seqs, is_prefill):
        n = [s.num_tokens - s.num_cached_tokens if is_prefill else 1 for s in seqs]
        steps.append((is_prefill, n, [s.num_prompt_tokens for s in seqs]))
        return run(seqs, is_prefill)

    llm.runner.run = recording_run
    return steps


@pytest.mark.parametrize("budget, async_output", [(16, False), (16, True), (1, False)],
                         ids=["16-sync", "16-async", "1-sync"])
def test_max_num_batched_tokens_bounds_every_step(model, tok, budget, async_output):
    """No chunked prefill: the scheduler admits waiting prompts while their tokens fit the
    budget, but always admits the first one (a prompt longer than the budget runs alone in its
    own step). Outputs == a large budget's == naive greedy."""
    lengths = [9, 8, 20, 5, 11, 6]  # 59 tokens in all; 9 + 8 = 17 > 16; 5 + 11 = 16; 20 > 16
    prompts = prompts_of(lengths, seed=21)
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    ref = [naive_greedy(model, p, 6, tok.vocab_size) for p in prompts]

    big = make_llm(model, tok, async_output=async_output)
    big_steps = _record_steps(big)
    assert [o.output_token_ids for o in big.generate(prompts, sp, use_tqdm=False)] == ref
    assert [n for pf, n, _ in big_steps if pf] == [lengths]  # one prefill step for every prompt

    small = make_llm(model, tok, max_num_batched_tokens=budget, async_output=async_output)
    steps = _record_steps(small)
    assert [o.output_token_ids for o in small.generate(prompts, sp, use_tqdm=False)] == ref
    prefill = [n for pf, n, _ in steps if pf]
    assert sorted(sum(prefill, [])) == sorted(lengths)  # every prompt prefilled exactly once
    assert [p for pf, _, ps in steps if pf for p in ps] == lengths  # FIFO
    for n in prefill:
        assert sum(n) <= budget or len(n) == 1, (budget, prefill)
    assert [20] in prefill
    if budget == 16:
        assert prefill == [[9], [8], [20], [5, 11], [6]]  # FIFO packing up to the budget
    else:
        assert all(len(n) == 1 for n in prefill)
    assert all(sum(n) <= len(prompts) for pf, n, _ in steps if not pf)  # decode: one per sequence
    assert small.stats["preemptions"] == 0


# ============================================================================ 3. preemption + prefix cache
def _check_page_accounting(bm, seqs):
    """ref_count[p] == number of live block tables holding p; free list == pages with count 0;
    a page still registered in the prefix cache holds exactly its registered tokens in every
    sequence that holds it (pages handed out again must lose their hash)."""
    holders = [0] * bm.num_pages
    for s in seqs:
        assert len(set(s.block_table)) == len(s.block_table)
        for i, p in enumerate(s.block_table):
            holders[p] += 1
            if bm.page_hash[p] is not None:
                assert tuple(s.token_ids[i * bm.page_size:(i + 1) * bm.page_size]) == bm.page_tokens[p]
    assert bm.ref_count == holders
    assert len(bm.free) == len(set(bm.free))
    assert set(bm.free) == {p for p in range(bm.num_pages) if holders[p] == 0}
    for h, p in bm.hash_to_page.items():
        assert bm.page_hash[p] == h


@pytest.mark.parametrize("async_output", [False, True], ids=["sync", "async"])
def test_preemption_with_prefix_caching(model, tok, async_output, monkeypatch):
    """5 samples of one prompt (its 2 full pages shared) in 10 pages: preemptions, shared pages
    under pressure, outputs == a roomy cache's (greedy ones == naive greedy); page counts
    consistent after every scheduling step and back to the initial state after generate
    (twice: the second call revives cached prefix pages)."""
    prompt = prompts_of([10], seed=31)[0]
    n = 16
    greedy = SamplingParams(max_tokens=n, ignore_eos=True)
    params = [greedy] + [SamplingParams(temperature=1.0, seed=s, max_tokens=n, ignore_eos=True)
                         for s in (1, 2, 3)] + [greedy]
    prompts = [prompt] * len(params)
    ref = make_llm(model, tok).generate(prompts, params, use_tqdm=False)  # roomy cache
    ref = [o.output_token_ids for o in ref]
    assert ref[0] == ref[4] == naive_greedy(model, prompt, n, tok.vocab_size)
    assert len({tuple(r) for r in ref[:4]}) == 4  # the samples differ: pages beyond the prompt differ

    schedulers, shared_seen = [], []

    class CheckedScheduler(Scheduler):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            schedulers.append(self)

        def schedule(self):
            out = super().schedule()
            live = list(self.running.values()) + list(self.waiting)
            _check_page_accounting(self.bm, live)
            tables = [set(s.block_table) for s in self.running.values()]
            shared_seen.append(any(a & b for i, a in enumerate(tables) for b in tables[i + 1:]))
            return out

    monkeypatch.setattr(s1.infer.engine, "Scheduler", CheckedScheduler)
    num_pages = 10  # 5 sequences of 26 tokens need 5 * 7 pages (minus shared ones)
    small = make_llm(model, tok, num_pages=num_pages, async_output=async_output)
    bm = small.block_manager
    for call in range(2):
        hits_before = bm.num_prefix_hits
        outs = small.generate(prompts, params, use_tqdm=False)
        assert [o.output_token_ids for o in outs] == ref, call
        assert small.stats["preemptions"] > 0 and sum(o.num_preemptions for o in outs) == small.stats["preemptions"]
        assert bm.num_prefix_hits - hits_before >= 2 * (len(prompts) - 1)
        # back to the initial state: nothing leaked
        assert bm.ref_count == [0] * num_pages
        assert sorted(bm.free) == list(range(num_pages))
        _check_page_accounting(bm, [])
    assert len(schedulers) == 1 and any(shared_seen)   # one scheduler serves both calls


class FullScanScheduler(Scheduler):
    """The scheduler with the plain decode policy as reference: every running sequence checked
    every step, in running order; a sequence whose next position starts a new page gets one,
    preempting the newest sequence not yet looked at this step (or itself, when none is left);
    one at its length limit is not scheduled."""

    def _schedule_decode(self):
        order, kept, scheduled = list(self.running.values()), [], []
        ps = self.bm.page_size
        while order:
            seq = order.pop(0)
            if seq.num_tokens >= self.max_len:
                kept.append(seq)
                continue
            if len(seq.block_table) * ps < seq.num_tokens:
                while not self.bm.free and order:
                    self.preempt(order.pop())
                if not self.bm.free:
                    self.preempt(seq)
                    continue
                self.bm.append_page(seq)
            scheduled.append(seq)
            kept.append(seq)
        self.running = {s.request_id: s for s in kept}
        return scheduled


def _drive_scheduler(cls, seed: int, async_output: bool) -> list:
    """A random workload on a small page pool (requests of random lengths arriving, finishing at
    random limits, some aborted, many preemptions), the device emulated by rules that depend only
    on each request's id and length. Returns every step's decisions and the final outputs."""
    import random
    from s1.infer.block_manager import BlockManager
    from s1.infer.budget import StepResult
    from s1.infer.request import Sequence, Status
    from s1.kernels import force_state as fs
    rng = random.Random(seed)
    bm = BlockManager(num_pages=14, page_size=4, enable_prefix_caching=bool(seed % 2))
    sched = cls(bm, max_num_seqs=5, max_num_batched_tokens=40, max_model_len=30, num_slots=5)
    limit = {}                    # request id -> the length at which the "device" finishes it
    seqs, log, pending, next_id = {}, [], [], 0

    def result(batch):
        done = [int(s.num_tokens >= limit[s.request_id]) for s in batch]
        n = len(batch)
        return batch, StepResult(token=[(7 * s.request_id + s.num_tokens) % 50 for s in batch],
                                 emitted=[1] * n, done=done,
                                 finish=[fs.FIN_MAX_TOKENS if d else fs.FIN_NONE for d in done],
                                 thinking_tokens=[0] * n, waits_used=[0] * n, phase=[fs.ANSWER] * n)

    for step in range(400):
        if next_id < 40 and rng.random() < 0.3:
            plen = rng.randint(1, 12)
            prompt = [rng.randint(0, 3) for _ in range(plen)]     # few distinct tokens: prefix hits
            seq = Sequence(next_id, prompt, bm.page_size)
            limit[next_id] = min(sched.max_len, plen + rng.randint(1, 25))
            seqs[next_id] = seq
            sched.add(seq)
            next_id += 1
        if rng.random() < 0.03:
            live = [s for s in seqs.values() if s.status is not Status.FINISHED]
            if live:
                sched.finish(rng.choice(live), "abort")
        batch, prefill = sched.schedule()
        sched.admitted.clear()
        log.append((step, prefill, [(s.request_id, tuple(s.block_table)) for s in batch],
                    sched.num_preemptions, sorted(bm.free)))
        if batch:
            sched.launched(batch)
            pending.append(result(batch))
        while len(pending) > int(async_output):
            sched.postprocess(*pending.pop(0))
    while pending:
        sched.postprocess(*pending.pop(0))
    log.append([(i, s.finish_reason, s.output_ids) for i, s in sorted(seqs.items())])
    return log


@pytest.mark.parametrize("async_output", [False, True], ids=["sync", "async"])
def test_scheduler_decode_filing_equals_full_scan(async_output):
    """The scheduler looks at a decoding sequence only at the step it was filed for (a page or its
    length limit); the reference checks every sequence every step. Same decisions, step by step
    (batch, block tables, preemptions, free pages), and same outputs, over random workloads with
    tight pages (preemptions), aborts, prefix hits and length limits."""
    preempted = 0
    for seed in range(6):
        got = _drive_scheduler(Scheduler, seed, async_output)
        ref = _drive_scheduler(FullScanScheduler, seed, async_output)
        for a, b in zip(got, ref):
            assert a == b, (seed, a, b)
        assert len(got) == len(ref)
        preempted += ref[-2][3]
        assert all(reason is not None for _, reason, _ in got[-1]), "a request never finished"
    assert preempted > 20, "the workloads must exercise preemption"


def test_decode_columns_track_the_sequences(model, tok, monkeypatch):
    """The decode-columns invariant (s1/infer/runner.py `_next`, rows NEXT_*): before every decode
    step, each running sequence with n tokens has column (NEXT_SLOT: its slot, NEXT_POS: n - 1,
    NEXT_CACHE_SLOT: the cache slot of position n - 1, NEXT_CONTEXT: n), kept on the device
    (set by the prefill, advanced by each decode step, pointed at new pages) -- through
    preemption, prefix hits, budget forcing and async output."""
    from s1.infer.runner import NEXT_CACHE_SLOT, NEXT_CONTEXT, NEXT_POS, NEXT_SLOT, NUM_NEXT_ROWS, ModelRunner
    checked = []
    orig = ModelRunner.run

    def run(self, seqs, is_prefill):
        if not is_prefill:
            self._flush_pages()
            ps = self.page_size
            for s in seqs:
                n = s.num_tokens
                want = [0] * NUM_NEXT_ROWS
                want[NEXT_SLOT], want[NEXT_POS], want[NEXT_CONTEXT] = s.slot, n - 1, n
                want[NEXT_CACHE_SLOT] = s.block_table[(n - 1) // ps] * ps + (n - 1) % ps
                assert self._next[:, s.slot].tolist() == want, (s, self._next[:, s.slot].tolist(), want)
            checked.append(len(seqs))
        return orig(self, seqs, is_prefill)
    monkeypatch.setattr(ModelRunner, "run", run)
    prompts = prompts_of([21, 13, 9])
    prompts.append(prompts[0][:16] + prompts[1][:5])      # shares 4 pages with the first
    params = SamplingParams(max_thinking_tokens=9, num_wait=1, max_tokens=30, ignore_eos=True)
    for async_output in (False, True):
        small = make_llm(model, tok, num_pages=16, async_output=async_output)
        outs = small.generate(prompts, params, use_tqdm=False)
        big = make_llm(model, tok, async_output=async_output)
        assert [o.output_token_ids for o in outs] == [o.output_token_ids for o in big.generate(
            prompts, params, use_tqdm=False)]
        assert small.stats["preemptions"] > 0
    assert sum(checked) > 100


# ============================================================================ 4. Triton engine
def _interp() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _in_interpreter(name: str) -> None:
    """Run check `name` here when TRITON_INTERPRET=1 is set, else in a child process with it set
    (it must be set before Triton compiles the kernels)."""
    if _interp():
        globals()[name]()
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", f"import tests.test_engine_extra as t; t.{name}()"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{name} failed in the interpreter:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def check_engine_all_triton() -> None:
    """The engine with kernels.use_backend("triton") for everything (RMSNorm, RoPE, SwiGLU, varlen
    flash attention in prefill, K/V store, paged decode attention) == the torch-backend engine ==
    naive greedy. Prefills with prefix hits (inside a batch, and revived from an earlier call)
    run flash attention with the new queries over [cached prefix pages + new] keys."""
    import s1.kernels.triton_ops as tops
    from tests.test_engine_kernels import context_model
    m, tok = context_model(seed=1)
    base = [7, 300, 4000, 123, 55, 999, 31, 8, 17, 2024]
    calls = [
        [base + [11, 12, 13], base + [21, 22], base + [31], [5, 6, 7, 8, 9]],  # hits inside the batch
        [base + [11, 12, 13], base + [41, 42, 43, 44, 45]],                     # hits on the 1st call's pages
    ]
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    V = tok.vocab_size
    with kernels.use_backend("torch"):
        ref = [[naive_greedy(m, p, 6, V) for p in ps] for ps in calls]
        # meaningful: same last token, other context -> other tokens; and no near-ties that
        # rounding differences between the backends could flip
        assert naive_greedy(m, [9, 99, 999, 31], 6, V) != ref[0][2]
        with torch.no_grad():
            for ps, rs in zip(calls, ref):
                for p, r in zip(ps, rs):
                    top2 = m(torch.tensor(p + r))[len(p) - 1:, :V].topk(2).values
                    assert (top2[:, 0] - top2[:, 1]).min() > 1e-3
        torch_llm = LLM(model=m, tokenizer=tok, page_size=4, num_pages=64, max_model_len=128)
        assert torch_llm.engine.ops is kernels.reference          # decided once, at construction
        torch_out = [[o.output_token_ids for o in torch_llm.generate(ps, sp, use_tqdm=False)] for ps in calls]
    assert torch_out == ref

    seen = {"attention": [], "paged": 0, "store": 0, "rms_norm": 0}
    orig = (tops.attention, tops.rms_norm, tops.paged_attention, tops.kv_store)

    def attention(q, k, v, cu_q, cu_k, *a):
        seen["attention"].append((cu_q.tolist(), cu_k.tolist()))
        return orig[0](q, k, v, cu_q, cu_k, *a)

    def rms_norm(*a):
        seen["rms_norm"] += 1
        return orig[1](*a)

    def paged(*a, **k):
        seen["paged"] += 1
        return orig[2](*a, **k)

    def store(*a, **k):
        seen["store"] += 1
        return orig[3](*a, **k)

    tops.attention, tops.rms_norm, tops.paged_attention, tops.kv_store = attention, rms_norm, paged, store
    try:
        with kernels.use_backend("triton"):
            llm = LLM(model=m, tokenizer=tok, page_size=4, num_pages=64, max_model_len=128)
        assert llm.engine.ops is tops                             # kept after the `with` block
        out, hits = [], []
        for ps in calls:
            h0 = llm.block_manager.num_prefix_hits
            out.append([o.output_token_ids for o in llm.generate(ps, sp, use_tqdm=False)])
            hits.append(llm.block_manager.num_prefix_hits - h0)
    finally:
        tops.attention, tops.rms_norm, tops.paged_attention, tops.kv_store = orig
    assert out == ref, (out, ref)
    assert hits == [4, 5], hits  # 2 + 2 pages inside the 1st batch; 3 + 2 revived in the 2nd call
    prefix_calls = [(q, k) for q, k in seen["attention"] if q != k]
    # per layer: the 1st call's batch prefill (one fresh, two with 8 cached tokens), the 2nd call's
    assert len(prefix_calls) == 2 * m.config.num_hidden_layers, seen["attention"]
    assert prefix_calls[0] == ([0, 13, 17, 20, 25], [0, 13, 25, 36, 41])
    assert seen["paged"] > 0 and seen["store"] > 0 and seen["rms_norm"] > 0
    print("engine on Triton kernels (prefill over cached prefix pages included) == torch engine == naive")


def test_engine_all_triton_kernels_with_prefix_cache(shared_data):
    _in_interpreter("check_engine_all_triton")


# ============================================================================ 5. bench.decode workload (3)
def test_bench_decode_smoke_budget_workload():
    """`python -m bench.decode --smoke --skip-hf`: workload (3) gives every sequence exactly 2
    forced extensions and exactly its thinking budget (the script asserts it in smoke mode)."""
    env = {k: v for k, v in os.environ.items() if k != "S1_KERNELS"}
    r = subprocess.run([sys.executable, "-m", "bench.decode", "--smoke", "--skip-hf"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads(r.stdout.strip().splitlines()[-1])
    (row,) = record["results"]
    assert row["min_waits"] == row["max_waits"] == 2 and row["avg_waits"] == 2.0
    assert row["exact_budget"] is True
    assert row["budget_tokens"] == row["offline_tokens"]
    assert "4/4 sequences used exactly 2 waits, 4/4 thought exactly their budget" in r.stderr


def test_bench_budget_workload_waits_land_where_designed(model, tok):
    """bench.decode workload (3) in process, token by token: the 2 "Wait"s sit exactly at the
    forced end-attempt positions of the last 2 periods of thinking, thinking is exactly the
    budget, then the forced end text and the capped answer (same length as the plain run)."""
    from bench.decode import StopAttempts, budget_forcing_params, nano_vllm_workload
    period = 4
    prompts, out_lens = nano_vllm_workload(3, 20, 30)
    params = budget_forcing_params(tok, out_lens, period)
    llm = make_llm(StopAttempts(model, tok.token_id("<|im_end|>"), period, tok), tok)
    outs = llm.generate(prompts, params, use_tqdm=False)
    wait, end = tok.encode("Wait"), tok.encode(SamplingParams().end_thinking)
    assert len(wait) == 1
    for p, o, sp, n in zip(prompts, outs, params, out_lens):
        B = sp.max_thinking_tokens
        assert B >= 2 * period and sp.min_thinking_tokens == B - 2 * period and sp.num_wait == 2
        attempts = [j for j in range(B - 2 * period, B) if (len(p) + j) % period == 0]
        assert len(attempts) == 2
        out = o.output_token_ids
        assert [j for j in range(B) if out[j] == wait[0]] == attempts
        assert o.num_waits_used == 2 and o.num_thinking_tokens == B
        assert out[B:B + len(end)] == end and len(out) == n and o.finish_reason == "length"
