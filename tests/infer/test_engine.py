"""Engine parity on a tiny random Qwen2 checkpoint (CPU, real Qwen2.5 tokenizer).

Oracles: naive full-recompute greedy decoding with our model, and transformers' greedy
`generate`. Page size 4 so every sequence spans several pages.

Also: raw prompts, the engine under repeated use (memory released on close / on the last
reference, several engines in a row, an interrupted call leaves the engine usable), the online
API (add_request / step / abort), and the engine on Triton kernels (the cache kernels alone, then
the whole forward with varlen prefill over cached prefix pages).
"""
import gc
import types
import weakref

import pytest
import torch

from s1 import kernels
from s1.infer import LLM, SamplingParams
from s1.infer.config import EngineConfig
from s1.infer.engine import LLMEngine
from s1.kernels import reference
from tests.helpers import (QUESTION, VOCAB, context_model, in_interpreter, make_llm, naive_greedy, prompts_of,
                           think_end_ids)

# the tiny checkpoint (ckpt), its model and tokenizer (tok) are conftest.py fixtures
pytestmark = pytest.mark.usefixtures("torch_backend")


PLAIN = SamplingParams(max_tokens=12, ignore_eos=True)
GREEDY_PROMPTS = prompts_of([3, 9, 17])


@pytest.fixture(scope="module")
def greedy_refs(ckpt, model, tok):
    """Naive full-recompute greedy (our model) and transformers' greedy generate; must agree."""
    hf, _ = ckpt
    suppress = list(range(tok.vocab_size, VOCAB))  # padded rows: never sampled by the engine
    refs = []
    for p in GREEDY_PROMPTS:
        naive = naive_greedy(model, p, 12, tok.vocab_size)
        g = hf.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                        pad_token_id=0, suppress_tokens=suppress)
        assert naive == g[0, len(p):].tolist()
        refs.append(naive)
    assert len({tuple(r) for r in refs}) == len(refs)  # distinct continuations: a meaningful check
    return refs


@pytest.mark.parametrize("async_output", [False, True], ids=["sync", "async"])
def test_greedy_equals_naive_and_transformers(model, tok, greedy_refs, async_output):
    llm = make_llm(model, tok, async_output=async_output)
    outs = llm.generate(GREEDY_PROMPTS, PLAIN, use_tqdm=False)
    for p, o, ref in zip(GREEDY_PROMPTS, outs, greedy_refs):
        assert o.finish_reason == "length" and len(o.output_token_ids) == 12
        assert o.output_token_ids == ref
        assert o.prompt_token_ids == p
    assert llm.stats["preemptions"] == 0


@pytest.mark.parametrize("async_output", [False, True], ids=["sync", "async"])
def test_preemption_gives_identical_outputs(model, tok, async_output):
    prompts = prompts_of([10, 7, 12, 9, 5], seed=1)
    greedy = SamplingParams(max_tokens=16, ignore_eos=True)
    seeded = SamplingParams(temperature=1.0, seed=77, max_tokens=16, ignore_eos=True)
    params = [greedy, seeded, greedy, seeded, greedy]
    ref = make_llm(model, tok).generate(prompts, params, use_tqdm=False)
    # 12 pages of 4 tokens: far less than 5 sequences of up to 28 tokens need
    small = make_llm(model, tok, num_pages=12, enable_prefix_caching=False, async_output=async_output)
    outs = small.generate(prompts, params, use_tqdm=False)
    assert small.stats["preemptions"] > 0
    assert [o.output_token_ids for o in outs] == [o.output_token_ids for o in ref]
    assert all(len(o.output_token_ids) == 16 for o in outs)
    assert sum(o.num_preemptions for o in outs) == small.stats["preemptions"]
    assert small.block_manager.num_free == 12  # every page came back


def test_prefix_sharing_fewer_pages_same_outputs(model, tok):
    prompt = prompts_of([22], seed=2)[0]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    no_share = make_llm(model, tok, enable_prefix_caching=False)
    a = no_share.generate([prompt] * 4, params, use_tqdm=False)
    share = make_llm(model, tok, enable_prefix_caching=True)
    b = share.generate([prompt] * 4, params, use_tqdm=False)
    assert [o.output_token_ids for o in a] == [o.output_token_ids for o in b]
    assert len({tuple(o.output_token_ids) for o in b}) == 1
    # 22-token prompt: its first 5 full pages (20 tokens) are shared by the 3 later copies
    assert share.stats["prefix_hit_pages"] == 15
    assert share.stats["peak_pages_used"] < no_share.stats["peak_pages_used"]
    # a second call revives the freed pages of the first (prefix cache survives finishing)
    c = share.generate([prompt], params, use_tqdm=False)
    assert c[0].output_token_ids == a[0].output_token_ids
    assert share.block_manager.num_prefix_hits == 20


def test_prefix_hit_inside_batch_with_different_suffixes(model, tok):
    base = prompts_of([16], seed=4)[0]
    prompts = [base + [11, 12, 13], base + [21, 22], base + [31]]
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    outs = make_llm(model, tok).generate(prompts, params, use_tqdm=False)
    for p, o in zip(prompts, outs):
        assert o.output_token_ids == naive_greedy(model, p, 5, tok.vocab_size)


def test_seeded_sampling_reproducible_and_batch_independent(model, tok):
    prompts = prompts_of([8, 13, 5], seed=5)
    sp = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=1234, max_tokens=8, ignore_eos=True)
    llm = make_llm(model, tok)
    alone = llm.generate([prompts[0]], sp, use_tqdm=False)[0].output_token_ids
    again = llm.generate([prompts[0]], sp, use_tqdm=False)[0].output_token_ids
    other = SamplingParams(temperature=0.7, seed=9, max_tokens=8, ignore_eos=True)
    mixed = llm.generate([prompts[1], prompts[0], prompts[2]], [other, sp, other], use_tqdm=False)
    assert alone == again == mixed[1].output_token_ids
    diff_seed = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=4321, max_tokens=8, ignore_eos=True)
    assert llm.generate([prompts[0]], diff_seed, use_tqdm=False)[0].output_token_ids != alone
    greedy = llm.generate([prompts[0]], PLAIN, use_tqdm=False)[0].output_token_ids
    assert alone != greedy[:8]


def test_never_samples_padded_vocab(model, tok):
    # make a padded embedding row (id >= tokenizer.vocab_size) the model's favourite token
    p = prompts_of([5], seed=6)[0]
    w = model.lm_head_weight
    saved = w[VOCAB - 1].clone()
    with torch.no_grad():
        first = naive_greedy(model, p, 1, tok.vocab_size)[0]
        w[VOCAB - 1] = 5.0 * w[first]
        assert int(model(torch.tensor(p))[-1].argmax()) == VOCAB - 1  # the test can fail
    try:
        outs = make_llm(model, tok).generate([p, p], [PLAIN, SamplingParams(
            temperature=1.0, seed=1, max_tokens=8, ignore_eos=True)], use_tqdm=False)
    finally:
        with torch.no_grad():
            w[VOCAB - 1] = saved
    for o in outs:
        assert o.output_token_ids and max(o.output_token_ids) < tok.vocab_size


def test_question_prompt_rendering_and_output_fields(model, tok):
    llm = make_llm(model, tok)
    sp = SamplingParams(max_thinking_tokens=5, max_answer_tokens=3)
    o = llm.generate(["What is 1+1?"], sp, use_tqdm=False)[0]
    assert o.prompt == tok.render_prompt("What is 1+1?")
    assert o.prompt_token_ids == tok.encode(o.prompt)
    end_ids = tok.encode(tok.thinking_format.forced_end)
    assert o.num_thinking_tokens == 5
    assert o.output_token_ids[5:5 + len(end_ids)] == end_ids
    assert len(o.output_token_ids) <= 5 + len(end_ids) + 3
    assert o.thinking == tok.decode(o.output_token_ids[:5])
    assert o.answer.startswith("Final Answer:")
    assert o.text == tok.decode(o.output_token_ids)
    assert o.finish_reason in ("stop", "length")


def test_bad_requests_get_errors_and_others_run(model, tok):
    llm = make_llm(model, tok, max_model_len=64)
    good = prompts_of([6], seed=7)[0]
    bad_top_p = SamplingParams(max_tokens=4, ignore_eos=True)
    bad_top_p.top_p = 0.0  # mutated after construction: generate re-validates
    inconsistent = SamplingParams(max_tokens=4)
    inconsistent.min_thinking_tokens, inconsistent.max_thinking_tokens = 10, 5
    prompts = [good, "", list(range(100, 180)), good, good, good, "   "]
    params = [PLAIN, PLAIN, PLAIN, bad_top_p, SamplingParams(stop=("<|not_a_token|>",)), inconsistent, PLAIN]
    outs = llm.generate(prompts, params, use_tqdm=False)
    ref = naive_greedy(model, good, 12, tok.vocab_size)
    assert outs[0].output_token_ids == ref and outs[0].finish_reason == "length"
    errors = {i: o.error for i, o in enumerate(outs) if o.finish_reason == "error"}
    assert set(errors) == {1, 2, 3, 4, 5, 6}
    assert "empty prompt" in errors[1] and "empty prompt" in errors[6]
    assert "80 tokens" in errors[2] and "64" in errors[2]
    assert "top_p" in errors[3]
    assert "unknown stop token '<|not_a_token|>'" in errors[4]
    assert "min_thinking_tokens" in errors[5]


@pytest.mark.parametrize("kw, field", [
    (dict(max_thinking_tokens=-1), "max_thinking_tokens"),
    (dict(min_thinking_tokens=-2), "min_thinking_tokens"),
    (dict(num_wait=-1), "num_wait"),
    (dict(min_thinking_tokens=8, max_thinking_tokens=4), "min_thinking_tokens"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(max_answer_tokens=-3), "max_answer_tokens"),
])
def test_sampling_params_validation(kw, field):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}"):
        SamplingParams(**kw)


def test_plain_generation_stops_at_stop_token(model, tok):
    # the greedy continuation's 3rd token, named as an extra stop token, ends the answer there
    llm = make_llm(model, tok)
    p = prompts_of([7], seed=8)[0]
    ref = naive_greedy(model, p, 10, tok.vocab_size)
    k = next(i for i in range(1, 10) if ref[i] not in ref[:i])
    name = tok._tok.id_to_token(ref[k])
    o = llm.generate([p], SamplingParams(max_tokens=10, stop=(name,)), use_tqdm=False)[0]
    assert o.output_token_ids == ref[:k + 1] and o.finish_reason == "stop"
    assert o.answer == tok.decode(ref[:k])
    o = llm.generate([p], SamplingParams(max_tokens=10, stop=(name,), ignore_eos=True), use_tqdm=False)[0]
    assert o.output_token_ids == ref[:k + 1]  # ignore_eos drops only the default stops


def test_cuda_graph_decode_plumbing_on_cpu(model, tok, greedy_refs, monkeypatch):
    """The CUDA-graph decode path (forward + sampling + budget step on static buffers, lazy
    capture with harmless dummy inputs, bucket padding with slot -1 and the dummy budget row,
    partial block-table copies) run on CPU: capture is faked, replay re-runs the captured step."""
    class FakeGraph:
        def pool(self):
            return None

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda g, pool=None: __import__("contextlib").nullcontext())
    llm = make_llm(model, tok, max_num_seqs=6, max_model_len=64)
    r = llm.runner
    r.use_cuda_graphs = True
    assert r.buckets() == [1, 2, 4, 6]
    launched = []

    def launch(entry):  # replay = run the captured step again on the current static buffers
        graph, out, bucket, filtered = entry
        launched.append(out.shape[1])
        out.copy_(r._graph_step(bucket, filtered))
    monkeypatch.setattr(r, "_launch", launch)
    outs = llm.generate(GREEDY_PROMPTS, PLAIN, use_tqdm=False)
    assert [o.output_token_ids for o in outs] == greedy_refs
    assert launched and set(launched) == {4}  # 3 sequences -> bucket 4 with one padding row
    assert set(r.graphs) == {(4, False)}      # (bucket, top-k/top-p pre-pass)
    # seeded sampling through the graph path == eager path; a second call reuses the budget state
    sp = SamplingParams(temperature=1.0, top_p=0.9, seed=5, max_tokens=6, ignore_eos=True)
    got = [o.output_token_ids for o in llm.generate(GREEDY_PROMPTS[:2], sp, use_tqdm=False)]
    assert (2, True) in r.graphs
    eager = make_llm(model, tok, max_num_seqs=6, max_model_len=64)
    assert got == [o.output_token_ids for o in eager.generate(GREEDY_PROMPTS[:2], sp, use_tqdm=False)]


# ============================================================================ raw prompts
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
    end = tok.encode(tok.thinking_format.forced_end)
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


# ============================================================================ the engine under repeated use
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


# ============================================================================ the online API
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


# ============================================================================ the engine on Triton kernels
# (run in the Triton interpreter: in a child process when this one was started without TRITON_INTERPRET=1)
def check_engine_with_triton_cache() -> None:
    """The engine with the Triton store + paged-attention kernels == with the references."""
    m, tok = context_model(seed=0)
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300], [42] * 11, [1, 2, 3, 300]]
    sp = SamplingParams(max_tokens=10, ignore_eos=True)
    outs = {}
    import s1.kernels.triton_ops as tops
    # the reference ops with the Triton cache kernels swapped in (the engine passes its ops down)
    mixed = types.SimpleNamespace(**{k: getattr(reference, k) for k in dir(reference) if not k.startswith("_")})
    mixed.kv_store, mixed.paged_attention = tops.kv_store, tops.paged_attention
    for use_triton in (False, True):
        llm = LLM(model=m, tokenizer=tok, page_size=4, num_pages=32, max_model_len=128, kernels="torch")
        if use_triton:
            llm.runner.ops = mixed
        outs[use_triton] = [o.output_token_ids for o in llm.generate(prompts, sp, use_tqdm=False)]
    assert outs[True] == outs[False], outs
    # the comparison means something: outputs are not a repeated last token, and the same last
    # token after another context gives other tokens (the paged attention matters)
    assert all(len(set(o)) > 1 for o in outs[False]), outs[False]
    assert outs[False][1] != outs[False][3], outs[False]
    print("engine with Triton cache kernels matches the reference path")


def test_engine_with_triton_cache_kernels(shared_data):
    in_interpreter(check_engine_with_triton_cache)


def check_engine_all_triton() -> None:
    """The engine with kernels.use_backend("triton") for everything (RMSNorm, RoPE, SwiGLU, varlen
    flash attention in prefill, K/V store, paged decode attention) == the torch-backend engine ==
    naive greedy. Prefills with prefix hits (inside a batch, and revived from an earlier call)
    run flash attention with the new queries over [cached prefix pages + new] keys."""
    import s1.kernels.triton_ops as tops
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
    in_interpreter(check_engine_all_triton)


# ----------------------------------------------------------------------------- logprobs
# SamplingParams.logprobs: every output token's log-probability and top-k equal log_softmax of a
# full recompute with our model (fp32), under preemption, asynchronous output, and a batch where only
# some requests ask (the server test, tests/serve/test_api_extras.py, compares with transformers).

@torch.no_grad()
def _full_logprobs(model, ids):
    return torch.log_softmax(model(torch.tensor(ids)).float(), dim=-1)


def test_logprobs_equal_full_recompute_under_preemption(model, tok):
    """(asynchronous output: the step's logprobs travel with its result; the CPU server's
    synchronous path is covered by tests/serve/test_api_extras.py)"""
    prompts = prompts_of([10, 7, 12, 9], seed=3)
    lp3 = SamplingParams(max_tokens=10, ignore_eos=True, logprobs=3)
    seeded = SamplingParams(temperature=1.0, seed=5, max_tokens=10, ignore_eos=True, logprobs=0)
    off = SamplingParams(max_tokens=10, ignore_eos=True)
    params = [lp3, seeded, off, lp3]
    ref = make_llm(model, tok).generate(prompts, [SamplingParams(**{**p.__dict__, "logprobs": None})
                                                  for p in params], use_tqdm=False)
    small = make_llm(model, tok, num_pages=10, enable_prefix_caching=False, async_output=True)
    outs = small.generate(prompts, params, use_tqdm=False)
    assert small.stats["preemptions"] > 0
    assert [o.output_token_ids for o in outs] == [o.output_token_ids for o in ref]   # asking changes nothing
    assert outs[2].logprobs is None
    for p, prm, o in zip(prompts, params, outs):
        if prm.logprobs is None:
            continue
        lp = _full_logprobs(model, p + o.output_token_ids)
        assert len(o.logprobs) == len(o.output_token_ids) == 10
        for k, (t, (v, top_ids, top_v)) in enumerate(zip(o.output_token_ids, o.logprobs)):
            row = lp[len(p) - 1 + k]
            assert abs(v - float(row[t])) < 1e-4
            assert len(top_ids) == prm.logprobs
            if prm.logprobs:
                top = row.topk(prm.logprobs)
                assert top_ids == top.indices.tolist() and top_v == pytest.approx(top.values.tolist(), abs=1e-4)
                assert top_ids[0] == t                                  # greedy
