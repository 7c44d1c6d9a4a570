"""The engine and offline `LLM.generate` under hostile input and injected faults (issue 24).

One bad request never hurts another: bounds are checked when a request is built; a request that
fails at admission, or every request of a step that fails as a whole, ends with finish_reason
"error" and frees its pages and slot, and the engine answers the next request exactly as before.
The prefix cache stays correct when its hash is forced to collide (the full check on a hit).
"""
from __future__ import annotations

import pytest
import torch

from s1.infer import block_manager as BM
from s1.infer.sampling import GREEDY_EPS, MAX_COUNT, SamplingParams
from tests.helpers import make_llm, prompts_of
from s1 import kernels


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def _ids(outs):
    return [o.output_token_ids for o in outs]


def _all_free(llm) -> bool:
    e = llm.engine
    return (e.block_manager.num_free == e.num_pages and not e.scheduler.running and not e.scheduler.waiting
            and sorted(e.scheduler.free_slots) == list(range(e.max_num_seqs)))


# ------------------------------------------------------------------ bounds
@pytest.mark.parametrize("field,value", [
    ("max_thinking_tokens", 2 ** 63), ("min_thinking_tokens", MAX_COUNT + 1), ("num_wait", 2 ** 63),
    ("max_answer_tokens", 2 ** 64), ("top_k", 2 ** 63), ("seed", 2 ** 63), ("max_tokens", -1),
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", 1e9), ("top_p", float("nan")),
])
def test_sampling_params_bounds_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}="):
        SamplingParams(**{field: value})


def test_tiny_temperature_is_greedy(model, tok):
    llm = make_llm(model, tok)
    p = prompts_of([7, 11], seed=5)
    ref = _ids(llm.generate(p, SamplingParams(max_tokens=10, ignore_eos=True), use_tqdm=False))
    for t in (1e-39, GREEDY_EPS / 2):
        outs = llm.generate(p, SamplingParams(temperature=t, max_tokens=10, ignore_eos=True, seed=1), use_tqdm=False)
        assert _ids(outs) == ref, t
    assert llm.engine.budget.tables.fparams.isfinite().all()


# ------------------------------------------------------------------ isolation at admission
def test_a_request_failing_at_admission_fails_alone_offline(model, tok, monkeypatch):
    """LLM.generate: the request whose device row cannot be written gets an "error" output; the
    others equal a clean run; the next call works (it used to raise a TypeError)."""
    llm = make_llm(model, tok, max_num_seqs=4)
    prompts = prompts_of([5, 9, 6, 8, 7], seed=1)
    params = [SamplingParams(max_tokens=8, ignore_eos=True)] * 5
    ref = _ids(llm.generate(prompts, params, use_tqdm=False))
    bad = SamplingParams(max_tokens=8, ignore_eos=True, top_k=777)      # the marked request
    real_admit = llm.engine.budget.admit

    def admit(slots, rules):
        if any(r.top_k == 777 for r in rules):
            raise RuntimeError("injected: cannot write this row")
        return real_admit(slots, rules)

    monkeypatch.setattr(llm.engine.budget, "admit", admit)
    outs = llm.generate(prompts, params[:2] + [bad] + params[3:], use_tqdm=False)
    assert outs[2].finish_reason == "error" and "injected" in outs[2].error
    assert [outs[i].output_token_ids for i in (0, 1, 3, 4)] == [ref[i] for i in (0, 1, 3, 4)]
    assert _all_free(llm)
    monkeypatch.undo()
    assert _ids(llm.generate(prompts, params, use_tqdm=False)) == ref
    assert _all_free(llm)


# ------------------------------------------------------------------ a step that fails as a whole
@pytest.mark.parametrize("which", ["prefill", "decode"])
def test_a_failed_step_fails_only_its_requests_and_the_engine_goes_on(model, tok, monkeypatch, which):
    """An exception inside the runner (OOM, a kernel error, a bug) on one step: that step's
    requests end with "error" and free everything (a failed prefill's prefix keys are dropped);
    the requests not in that step, and every later request, equal a clean run's outputs."""
    llm = make_llm(model, tok, max_num_seqs=2)
    eng = llm.engine
    prompts = prompts_of([9, 10, 11, 12], seed=2)    # 2 slots: two run, two wait
    ref = _ids(llm.generate(prompts, GREEDY, use_tqdm=False))
    real_run, calls = eng.runner.run, []

    def run(seqs, is_prefill):
        calls.append(is_prefill)
        if is_prefill == (which == "prefill") and not getattr(run, "fired", False) and len(calls) > 1:
            run.fired = True
            raise RuntimeError("injected: CUDA out of memory")
        return real_run(seqs, is_prefill)

    eng.block_manager.hash_to_page.clear()           # no cached pages: the first prefill computes them
    monkeypatch.setattr(eng.runner, "run", run)
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    failed = [i for i, o in enumerate(outs) if o.finish_reason == "error"]
    assert failed and len(failed) < 4, [o.finish_reason for o in outs]
    assert all("injected" in outs[i].error for i in failed)
    assert all(outs[i].output_token_ids == ref[i] for i in range(4) if i not in failed)
    assert eng.counters["step_failures"] == 1 and _all_free(llm)
    for h, p in eng.block_manager.hash_to_page.items():   # every key left holds computed KV
        assert eng.block_manager.page_hash[p] == h
    monkeypatch.undo()
    assert _ids(llm.generate(prompts, GREEDY, use_tqdm=False)) == ref   # prefix hits included
    assert eng.consecutive_step_failures == 0 and _all_free(llm)


def test_engine_step_outputs_carry_the_error(model, tok, monkeypatch):
    """The online API: the failed requests come back from step() as finished "error" outputs."""
    llm = make_llm(model, tok)
    eng = llm.engine
    rid = eng.add_request(prompts_of([6])[0], GREEDY, raw=True)
    monkeypatch.setattr(eng.runner, "run", lambda *a: (_ for _ in ()).throw(MemoryError("injected")))
    outs = eng.step()
    assert [(o.request_id, o.finished, o.output.finish_reason) for o in outs] == [(rid, True, "error")]
    assert "MemoryError" in outs[0].output.error and not eng.has_unfinished()
    monkeypatch.undo()
    eng.add_request(prompts_of([6])[0], GREEDY, raw=True)
    while eng.has_unfinished():
        outs = eng.step()
    assert outs[-1].output.finish_reason == "length" and len(outs[-1].output.output_token_ids) == 12


# ------------------------------------------------------------------ prefix cache
def test_prefix_keys_are_chained_sha256():
    h1 = BM.chain_hash(BM.ROOT_HASH, [1, 2, 3, 4])
    assert len(h1) == 32 and h1 != BM.chain_hash(BM.ROOT_HASH, [1, 2, 3, 5])
    assert BM.chain_hash(h1, [5, 6, 7, 8]) != BM.chain_hash(BM.chain_hash(BM.ROOT_HASH, [9, 2, 3, 4]), [5, 6, 7, 8])


@pytest.mark.parametrize("collide", ["constant", "ignores_parent"])
def test_forced_hash_collisions_keep_outputs_correct(model, tok, monkeypatch, collide):
    """Every key collides (constant), or keys ignore the parent page (so pages with equal tokens
    after different prefixes collide): a hit is only taken after the full check (page tokens +
    parent page and its generation), so each prompt attends over its own KV: outputs equal a run
    without the prefix cache, request after request, while pages are evicted and reused."""
    g = torch.Generator().manual_seed(9)
    shared = torch.randint(0, 150000, (8,), generator=g).tolist()    # two pages of 4
    tail = torch.randint(0, 150000, (8,), generator=g).tolist()
    prompts = [shared + tail, [7, 7, 7, 7] + tail, shared + tail[:5], [7, 7, 7, 7] + shared[4:] + tail,
               shared[:4] + [1, 2, 3, 4] + tail, shared + tail]
    ref_llm = make_llm(model, tok, enable_prefix_caching=False, num_pages=24)
    ref = [_ids(ref_llm.generate([p], GREEDY, use_tqdm=False))[0] for p in prompts]
    if collide == "constant":
        monkeypatch.setattr(BM, "chain_hash", lambda prev, toks: b"collision")
    else:
        monkeypatch.setattr(BM, "chain_hash", lambda prev, toks: repr(tuple(toks)).encode())
    llm = make_llm(model, tok, num_pages=24)        # small: pages are evicted and handed out again
    for rnd in range(2):
        outs = [llm.generate([p], GREEDY, use_tqdm=False)[0] for p in prompts]
        assert _ids(outs) == ref, rnd
        outs = llm.generate(prompts, GREEDY, use_tqdm=False)           # batched, sharing pages
        assert _ids(outs) == ref, rnd
    assert _all_free(llm)


# ------------------------------------------------------------------ the "auto" cap
def test_auto_cap_fits_the_kv_pool(model, tok):
    """With a pool smaller than the context, "auto" leaves room for the answer in the pool."""
    llm = make_llm(model, tok, num_pages=16, max_model_len=512)   # 64 tokens of KV
    p = prompts_of([10])[0]
    out = llm.generate([p], SamplingParams(max_thinking_tokens="auto"), raw=True, use_tqdm=False)[0]
    assert out.max_thinking_tokens <= 64 - 10 - 100 or out.max_thinking_tokens == 0
    assert out.finish_reason in ("stop", "length") and _all_free(llm)
