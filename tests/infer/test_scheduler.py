"""The scheduler: the per-step token budget `max_num_batched_tokens`, preemption with prefix
caching on (page accounting checked after every step), and its decode filing against a
full-scan reference scheduler on random workloads.

Oracle: naive full-recompute greedy decoding with our model (conftest.py's tiny random Qwen2
checkpoint with the real Qwen2.5 tokenizer; tests/helpers.py's engine helpers, page size 4).
"""
import pytest

import s1.infer.engine
from s1.infer import SamplingParams
from s1.infer.scheduler import Scheduler
from tests.helpers import make_llm, naive_greedy, prompts_of

pytestmark = pytest.mark.usefixtures("torch_backend")


# ============================================================================ token budget
def _record_steps(llm):
    """Wrap the runner: record per step (is_prefill, tokens computed per sequence, prompt lens)."""
    steps, run = [], llm.runner.run

    def recording_run(seqs, is_prefill):
        n = [s.num_tokens - s.num_cached_tokens if is_prefill else 1 for s in seqs]
        steps.append((is_prefill, n, [len(s.prompt_ids) for s in seqs]))
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


# ============================================================================ preemption + prefix cache
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
