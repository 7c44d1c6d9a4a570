"""The engine under repeated use: O(1) page revival, memory released on close / on the last
reference, several engines in a row, an interrupted call leaves the engine usable, the online
API (add_request / step / abort), and the host-overhead benchmark's smoke run."""
import gc
import statistics
import subprocess
import sys
import time
import weakref

import pytest
import torch

from s1 import kernels
from s1.infer import LLM, SamplingParams
from s1.infer.block_manager import BlockManager
from s1.infer.config import EngineConfig
from s1.infer.engine import LLMEngine
from s1.infer.request import Sequence
from tests.test_engine import ckpt, make_llm, model, naive_greedy, prompts_of, tok  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def torch_backend():
    with kernels.use_backend("torch"):
        yield


# ------------------------------------------------------------------ block manager
def _revive_seconds(num_pages: int, n_revive: int = 500) -> float:
    """Time taking `n_revive` pages out of the middle of a free list of `num_pages` pages: what
    reviving a cached page does (allocate() on a prefix hit whose page is free)."""
    bm = BlockManager(num_pages, 1, enable_prefix_caching=True)
    mid = num_pages // 2
    t = time.perf_counter()
    for page in range(mid, mid + n_revive):
        bm._take(page)
    dt = time.perf_counter() - t
    assert bm.num_free == num_pages - n_revive
    return dt


def test_reviving_a_cached_page_is_constant_time():
    """Reviving takes a page out of the middle of the free list. With a deque that was linear in
    the free list (61K pages on an H200: the engine slowed down call after call); now it is O(1):
    the time per revival must not grow with a 100x longer free list (a linear removal: ~100x)."""
    small = statistics.median(_revive_seconds(2_000) for _ in range(5))
    large = statistics.median(_revive_seconds(200_000) for _ in range(5))
    assert large < 5 * small, (small, large)


def test_revived_pages_keep_their_prefix():
    """A finished prompt's pages stay cached on the free list and are revived by the next prompt
    with the same prefix (the exact pages, counted as hits)."""
    bm = BlockManager(64, 4, enable_prefix_caching=True)
    first = Sequence(0, list(range(13)), 4)          # 3 full pages before the last token
    bm.allocate(first)
    pages = list(first.block_table[:3])
    bm.deallocate(first)
    again = Sequence(1, list(range(13)) + [99], 4)
    cached = bm.allocate(again)
    assert again.block_table[:3] == pages and bm.num_prefix_hits == 3 and cached == 12


# ------------------------------------------------------------------ memory
def test_close_frees_the_cache_at_once(model, tok):
    llm = make_llm(model, tok)
    llm.generate(prompts_of([5, 9]), SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    refs = [weakref.ref(t) for t in (llm.engine.cache.k, llm.engine.cache.v, llm.engine.budget.tables.state,
                                     llm.engine.runner.block_tables)]
    gc.disable()
    try:
        llm.close()
        assert all(r() is None for r in refs), "close() left a reference to the KV cache or the tables"
    finally:
        gc.enable()
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate(prompts_of([3]), SamplingParams(max_tokens=2), use_tqdm=False)


def test_dropping_the_last_reference_frees_the_cache(model, tok):
    """No reference cycles: the cache goes with the last reference, without a garbage collection."""
    gc.disable()
    try:
        with make_llm(model, tok) as llm:
            llm.generate(prompts_of([5]), SamplingParams(max_tokens=3, ignore_eos=True), use_tqdm=False)
            ref = weakref.ref(llm.engine.cache.k)
        assert ref() is None                       # `with` closed it
        llm = make_llm(model, tok)
        llm.generate(prompts_of([5]), SamplingParams(max_tokens=3, num_wait=1), use_tqdm=False)
        ref = weakref.ref(llm.engine.cache.k)
        del llm
        assert ref() is None, "an LLM dropped without close() kept its KV cache alive"
    finally:
        gc.enable()


def test_five_engines_in_a_row(model, tok):
    ref = None
    for i in range(5):
        with make_llm(model, tok, num_pages=None, max_model_len=64) as llm:
            out = llm.generate(prompts_of([7], seed=1), SamplingParams(max_tokens=5, ignore_eos=True),
                               use_tqdm=False)[0].output_token_ids
            assert ref is None or out == ref
            ref = out


def test_interrupted_call_frees_its_pages_and_the_engine_goes_on(model, tok, monkeypatch):
    llm = make_llm(model, tok, num_pages=64)
    ps = prompts_of([5, 9, 13])
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    want = [o.output_token_ids for o in llm.generate(ps, params, use_tqdm=False)]
    run, n = llm.runner.run, [0]

    def flaky(seqs, is_prefill):
        n[0] += 1
        if n[0] == 4:
            raise KeyboardInterrupt
        return run(seqs, is_prefill)
    monkeypatch.setattr(llm.runner, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(ps, params, use_tqdm=False)
    assert llm.block_manager.num_free == 64 and not llm.engine.has_unfinished()
    assert sorted(llm.scheduler.free_slots) == list(range(llm.engine.max_num_seqs))
    assert [o.output_token_ids for o in llm.generate(ps, params, use_tqdm=False)] == want


# ------------------------------------------------------------------ the online API
def test_online_engine_streams_and_aborts(model, tok):
    eng = LLMEngine(EngineConfig(page_size=4, num_pages=128, max_model_len=512), model=model, tokenizer=tok)
    ps = prompts_of([5, 9, 4])
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    a = eng.add_request(ps[0], params)
    b = eng.add_request(ps[1], params)
    streamed = {a: [], b: [], "c": []}
    finals, steps = {}, 0
    while eng.has_unfinished():
        for ro in eng.step():
            streamed[ro.request_id] += ro.new_token_ids
            if ro.finished:
                finals[ro.request_id] = ro.output
        steps += 1
        if steps == 3:                              # a request joins the running batch mid-way
            eng.add_request(ps[2], params, request_id="c")
        if steps == 5:
            assert eng.abort(b)                     # its pages and slot come back at once
            assert not eng.abort(b)
    want = [naive_greedy(model, p, 10, tok.vocab_size) for p in ps]
    assert streamed[a] == finals[a].output_token_ids == want[0]
    assert streamed["c"] == finals["c"].output_token_ids == want[2]
    assert finals[b].finish_reason == "abort" and streamed[b] == want[1][:len(streamed[b])]
    assert 0 < len(streamed[b]) < 10
    assert eng.block_manager.num_free == 128
    eng.close()


def test_host_overhead_benchmark_smoke():
    r = subprocess.run([sys.executable, "-m", "bench.host_overhead", "--smoke"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| batch | host us / step" in r.stdout and '"bench": "host_overhead"' in r.stdout
    r = subprocess.run([sys.executable, "-m", "bench.host_overhead", "--smoke", "--phases"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| calls | host | schedule | append_page |" in r.stdout


def test_gpu_harness_smoke(tmp_path):
    """`python -m bench.gpu` on a CPU with --smoke: parts run in order under their caps, every line
    echoed with its part's name, a summary written; a part without a CPU variant is skipped."""
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--deadline", "300", "--parts",
                        "tests,sampler,kernels", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[sampler] | impl | batch" in r.stdout and "[tests] " in r.stdout
    import json
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [p["part"] for p in s["parts"]] == ["tests", "sampler", "kernels"]
    assert [p["status"] for p in s["parts"]] == ["ok", "ok", "skipped (GPU only)"]
    assert (tmp_path / "tests.log").exists() and s["env"]["commit"]
