"""The sampling kernels of s1/kernels/sampling.py vs their torch references (s1/kernels/reference.py):
gumbel_argmax (the fused Triton sampler), the reference vs the sort-based sampler of top-k/top-p
rows (filtered_choices), and sample_and_force (sampling + budget-forcing rules in one op).

Without CUDA the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set below before triton
is imported), so shapes stay small; odd on purpose: V not a multiple of the tile, padded ids
(vocab_size < V), vocab_size > V, several tiles per chunk and several chunks per row (the second
stage), strided rows. Samples must be *equal*: same u bits, same scores, same tie-breaking.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import

import pytest  # noqa: E402

from s1 import kernels  # noqa: E402
from s1.infer import budget  # noqa: E402
from s1.kernels import force_state as fs  # noqa: E402
from s1.kernels import reference as ref  # noqa: E402
from tests.kernels.helpers import (END_IDS, KEEP_ID, PAIR, VOCAB, V, clone, poisoned_allocations, random_logits,  # noqa: E402
                                  random_tables)
from tests._lib_helpers import h32_i32, uniform_noise_i64  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="no CUDA and TRITON_INTERPRET was set to something other than 1")
SEEDS = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 12345, 2 ** 62 + 977, 2 ** 63 - 1, 123456789]


def _sampling():
    pytest.importorskip("triton")
    from s1.kernels import sampling
    return sampling


# ------------------------------------------------------------------------------- the hash (no triton)
def test_int32_hash_is_bit_identical_to_int64():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(0, 2 ** 32, (200_000,), generator=g, dtype=torch.int64),
                   torch.tensor([0, 1, 2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1])])
    assert torch.equal(h32_i32(ref._to_i32(x)), ref._to_i32(ref._h32(x)))
    assert torch.equal(ref._to_i32(x).long() & ref._M32, x)


def test_uniform_noise_int32_matches_int64_spec():
    seed = torch.tensor(SEEDS + [-1, -(2 ** 63), -(2 ** 32)])
    pos = torch.tensor([0, 1, 2, 3, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 5, 10 ** 12, 7, 0, 9])
    a, b = uniform_noise_i64(seed, pos, 4099), ref.uniform_noise(seed, pos, 4099)
    assert torch.equal(a, b)
    assert a.dtype == torch.float32 and bool(((a > 0) & (a < 1)).all())
    # one noise function: the engine's budget state has no sampler of its own
    assert not hasattr(budget, "uniform_noise") and not hasattr(budget, "perturbed_scores")


def test_noise_is_strictly_inside_the_unit_interval():
    """u == 1.0 would make g = -log(-log u) = +inf, and that id would win whatever the logits say.
    With the former 24-bit mapping ((x >> 8) + 0.5) * 2^-24, (2^24 - 1) + 0.5 rounded to 2^24 in
    fp32: ~0.9% of sampled rows at Qwen's vocabulary had such an id. Over 240 rows x 151,936 ids
    (36M draws, ~4 expected hits of the top 23-bit value) every u must stay < 1 and every g finite."""
    V = 151_936
    for start in range(0, 240, 60):
        seed = torch.arange(start, start + 60)
        u = ref.uniform_noise(seed, torch.zeros(60, dtype=torch.long), V)
        assert float(u.max()) < 1.0 and float(u.min()) > 0.0
        assert bool(torch.isfinite(-torch.log(-torch.log(u))).all())
    # the largest value the mapping can produce is exact in fp32 and below 1
    top = (torch.tensor(2 ** 23 - 1, dtype=torch.float32) + 0.5) * (1.0 / (1 << 23))
    assert float(top) == 1 - 2 ** -24


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_budget_state_samples_through_the_switch(backend):
    """BudgetState.step's unfiltered-sampling path calls gumbel_argmax from the kernel switch: the
    Triton kernel (interpreter here) and the torch reference give the same tokens, and rows below
    their thinking minimum never emit an end-of-thinking id, even when it dominates the logits."""
    if backend == "triton":
        _sampling()
    SP = budget.SpecialTokens(think_end_ids=[40, 41, 42], answer_stop_ids=[41, 42], delimiter_ids=[40, 30],
                              newline_id=31, pad_id=42, vocab_size=45)
    rules = [budget.RequestRules(thinking=True, min_think=3, temperature=0.7, seed=s, extension_ids=[20],
                                 end_ids=[31, 40], stop_ids=[41, 42]) for s in range(6)]
    g = torch.Generator().manual_seed(3)
    steps = [torch.randn(6, 48, generator=g) * 2 for _ in range(3)]
    dev = DEVICE if backend == "triton" else "cpu"   # Triton on CPU tensors only in the interpreter
    for x in steps:
        x[:, 40] += 6.0                                          # the end token dominates
        x[:, 46] = 50.0                                          # a padded id: never sampled
    outs = {}
    for name in ("torch", backend):
        d = dev if name == backend else "cpu"
        st = budget.BudgetState(len(rules), SP, d, kernels.get_ops(torch.device(d), name))
        st.admit(list(range(6)), rules)
        outs[name] = [st.step(x.to(d), torch.arange(6, device=d), filtered=False)[0].tolist() for x in steps]
    assert outs[backend] == outs["torch"]
    flat = [t for row in outs["torch"] for t in row]
    assert not set(flat) & {40, 41, 42, 46} and len(set(flat)) > 3


@pytest.mark.parametrize("T", [1.0, 0.5, 0.25])
def test_reference_matches_the_budget_sampler(T):
    """With 1/T exact, logits * (1/T) == logits / T, so gumbel_argmax must reproduce the sort-based
    sampler (filtered_choices, no filter set) for t_u and its end-token-masked sample t_m exactly."""
    g = torch.Generator().manual_seed(1)
    B, V, vocab = 8, 300, 290
    logits = torch.randn(B, V, generator=g) * 2
    logits[:, vocab:] = 30.0                                    # padded ids must never win
    mask = torch.tensor([3, 17, 250])
    logits[1, 17] = logits[2, 3] = 20.0                         # masked ids that win t_u
    temp = torch.tensor([T, T, T, 0.0, T, 0.0, T, T])
    seed, pos = torch.tensor(SEEDS), torch.arange(B) * 5
    x = logits.clone()
    x[:, vocab:] = float("-inf")
    inv_t = torch.where(temp > 0, 1.0 / temp.clamp_min(1e-30), torch.zeros_like(temp))
    f_u, f_m = ref.filtered_choices(x, inv_t, torch.zeros(B, dtype=torch.long), torch.ones(B), seed, pos,
                                    vocab, mask)
    t_u, t_m = ref.gumbel_argmax(logits, inv_t, seed, pos, vocab, mask)
    assert torch.equal(t_u, f_u)
    assert torch.equal(t_m, f_m)
    assert t_u[1] == 17 and t_u[2] == 3 and t_m[1] != 17 and t_m[2] != 3


# ------------------------------------------------------------------------------- kernel vs reference
def _case(B, V, vocab, dtype, seed=0):
    """Odd logits: a strided row layout, masked ids that are the unmasked argmax, greedy ties,
    padded ids with the largest logits."""
    g = torch.Generator().manual_seed(seed)
    big = torch.randn(2 * B, V + 7, generator=g) * 2
    logits = big.to(dtype)[::2, 3:3 + V]                       # row stride 2 * (V + 7), offset 3
    n = min(V, vocab)
    if V > vocab:
        logits[:, vocab:] = 1e4
    mask_list = [i for i in (n // 2, n - 1, 0) if i < n][:2] + [vocab + 1, n // 2]   # + a padded id, a dup
    if n > 2:
        logits[0, mask_list[0]] = 40.0                         # t_u masked, greedy or not
        if B > 1:
            logits[1, mask_list[1]] = 40.0
        if B > 2:   # greedy ties, also in the same lane of later tiles: the lowest id wins
            for d in (0, 16, 128, 256, 1024, n):
                i = min(n // 3 + d, n - 2)
                if i not in mask_list:
                    logits[2, i] = 50.0
    inv_t = torch.tensor([0.0, 1.0, 0.0, 1 / 0.7, 3.0][:B])
    if B == 1:
        inv_t = torch.tensor([1.3])
    seed = torch.tensor(SEEDS[-B:])
    pos = torch.tensor([0, 1, 2 ** 31 + 3, 17, 4095][:B])
    return logits, inv_t, seed, pos, torch.tensor(mask_list)


CASES = [  # B, V, vocab_size, dtype, block_v, num_chunks
    (1, 1, 1, torch.float32, None, None),
    (1, 37, 40, torch.float16, 16, None),
    (3, 37, 30, torch.float16, 16, 2),
    (5, 1000, 990, torch.float32, 128, 3),
    (3, 1000, 1000, torch.bfloat16, 256, 2),
    (5, 4099, 4000, torch.float16, 1024, 2),
    (3, 4099, 5000, torch.float32, None, None),
]


@needs_triton
@pytest.mark.parametrize("B,V,vocab,dtype,block_v,num_chunks", CASES,
                         ids=[f"B{c[0]}-V{c[1]}-vocab{c[2]}-{str(c[3])[6:]}-blk{c[4]}-S{c[5]}" for c in CASES])
def test_kernel_matches_reference(B, V, vocab, dtype, block_v, num_chunks):
    sampling = _sampling()
    logits, inv_t, seed, pos, mask = _case(B, V, vocab, dtype)
    want = ref.gumbel_argmax(logits, inv_t, seed, pos, vocab, mask)
    args = [t.to(DEVICE) for t in (logits, inv_t, seed, pos)]
    with poisoned_allocations():
        got = sampling.gumbel_argmax(*args, vocab, mask.to(DEVICE), block_v=block_v, num_chunks=num_chunks)
    for name, w, o in zip(("t_u", "t_m"), want, got):
        assert o.dtype == torch.int64 and o.shape == (B,)
        assert torch.equal(o.cpu(), w), f"{name}: kernel {o.tolist()} != reference {w.tolist()}"
    n = min(V, vocab)
    t_u, t_m = want
    assert bool((t_u < n).all()) and bool((t_m < n).all())
    if n > 2:
        assert not bool(torch.isin(t_m, mask).any())
        assert t_u[0] == mask[0] and t_m[0] != mask[0]


@needs_triton
def test_edge_rows():
    """-inf and NaN rows, every id masked, no mask ids; expectations spelled out."""
    sampling = _sampling()
    inf, V = float("inf"), 11
    x = torch.randn(7, V, generator=torch.Generator().manual_seed(5))
    x[0] = -inf; x[0, 4] = 1.0                       # only masked id 4 finite (sampled row)
    x[1] = -inf; x[1, 4] = 1.0                       # same, greedy
    x[2] = -inf                                      # all -inf: t_u = 0, t_m = lowest unmasked (1)
    x[3, 2] = float("nan"); x[3, 6] = float("nan")   # greedy NaN: first NaN, as torch.argmax
    x[4, 5] = inf; x[4, 7] = inf                     # sampled +inf tie: lowest id
    inv_t = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0])
    seed, pos = torch.arange(7) + 2 ** 40, torch.arange(7)
    mask = torch.tensor([4, 0, 9])
    want_u = [4, 4, 0, 2, 5]
    want_m = [1, 1, 1, 2, 5]
    def on_device(impl):   # the Triton kernel takes tensors on its device (CUDA, or CPU when interpreting)
        if impl is ref.gumbel_argmax:
            return impl

        def run(*a):
            out = impl(*(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in a))
            return tuple(o.cpu() for o in out)
        return run

    for impl in map(on_device, (ref.gumbel_argmax, sampling.gumbel_argmax)):
        t_u, t_m = impl(x, inv_t, seed, pos, 10, mask)
        assert t_u[:5].tolist() == want_u and t_m[:5].tolist() == want_m, impl
        assert torch.equal(t_u, ref.gumbel_argmax(x, inv_t, seed, pos, 10, mask)[0])
        # every candidate id masked -> t_m = t_u; no mask ids -> t_m = t_u
        for m in (torch.tensor([0, 1, 2]), torch.zeros(0, dtype=torch.long)):
            a, b = impl(x[:, :3], inv_t, seed, pos, 3, m)
            assert torch.equal(a, b), (impl, m)
            assert torch.equal(a, ref.gumbel_argmax(x[:, :3], inv_t, seed, pos, 3, m)[0])
    # an all-greedy batch (the CPU reference skips the noise) is plain argmax over real ids
    t_u, _ = ref.gumbel_argmax(x[5:], torch.zeros(2), seed[5:], pos[5:], 10, mask)
    assert torch.equal(t_u, x[5:, :10].argmax(-1))


def _chi2_check(t, p, n, crit):
    obs = torch.bincount(t.cpu(), minlength=p.numel()).double()
    exp = p.double() * n
    nz = exp > 0
    assert bool((obs[~nz] == 0).all()), obs.tolist()
    chi2 = float(((obs[nz] - exp[nz]) ** 2 / exp[nz]).sum())
    assert chi2 < crit, (obs.tolist(), exp.tolist(), chi2)


LOGITS5, INV_T5, MASK5 = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5]), 1 / 0.7, torch.tensor([3])
P_U = torch.softmax(LOGITS5 * INV_T5, 0)                                      # t_u's law
P_M = torch.softmax((LOGITS5 * INV_T5).index_fill(0, MASK5, -float("inf")), 0)  # t_m's: id 3 removed
CHI2_CRIT = {4: 23.5, 3: 21.1}   # chi-square quantiles at p = 1e-4 for 4 and 3 degrees of freedom


def _race(n, seed0):
    return (LOGITS5.expand(n, 5), torch.full((n,), INV_T5), torch.arange(n) * 7919 + seed0,
            torch.arange(n) % 13, 5, MASK5)


def test_reference_distribution_matches_softmax():
    """Many seeds (CPU reference): t_u ~ softmax(logits * inv_t), t_m ~ the same without the
    masked id (renormalized). Chi-square over 5 (4) bins, far tail p < 1e-4."""
    n = 20000
    t_u, t_m = ref.gumbel_argmax(*_race(n, 2 ** 33))
    _chi2_check(t_u, P_U, n, CHI2_CRIT[4])
    _chi2_check(t_m, P_M, n, CHI2_CRIT[3])


@needs_triton
def test_kernel_distribution_matches_softmax():
    """The same check on the kernel's own samples (fewer: the interpreter runs one program per
    row at ~10 ms each), which must also equal the reference's row for row."""
    sampling = _sampling()
    n = 500
    args = _race(n, 2 ** 40 + 3)
    t_u, t_m = sampling.gumbel_argmax(*(a.to(DEVICE) if torch.is_tensor(a) else a for a in args))
    r_u, r_m = ref.gumbel_argmax(*args)
    assert torch.equal(t_u.cpu(), r_u) and torch.equal(t_m.cpu(), r_m)
    _chi2_check(t_u, P_U, n, CHI2_CRIT[4])
    _chi2_check(t_m, P_M, n, CHI2_CRIT[3])


@needs_triton
def test_backend_switch_and_validation():
    sampling = _sampling()
    assert kernels.get_ops(torch.device("cpu")).gumbel_argmax is ref.gumbel_argmax
    logits, inv_t, seed, pos, mask = _case(3, 37, 30, torch.float32, seed=3)
    want = ref.gumbel_argmax(logits, inv_t, seed, pos, 30, mask)
    with kernels.use_backend("triton"):
        ops = kernels.get_ops(torch.device(DEVICE))
        got = ops.gumbel_argmax(*(t.to(DEVICE) for t in (logits, inv_t, seed, pos)), 30, mask.to(DEVICE))
    assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want))
    dev = [t.to(DEVICE) for t in (logits, inv_t, seed, pos)]
    bad = [
        (dev[0][0], *dev[1:], 30, mask),                                    # 1-D logits
        (dev[0].long(), *dev[1:], 30, mask),                                # integer logits
        (dev[0], dev[1][:2], *dev[2:], 30, mask),                           # short inv_temperature
        (*dev, 0, mask),                                                    # no candidate ids
        (*dev, 30, torch.arange(sampling.MAX_MASK_IDS + 1)),                # too many mask ids
    ]
    for args in bad:
        with pytest.raises(ValueError):
            sampling.gumbel_argmax(*args)


# ------------------------------------------------------------------------------- sample_and_force
# The fused sampling + budget-forcing op (s1/kernels/sampling.py::sample_and_force) against its torch
# specification (s1/kernels/reference.py::sample_and_force). Random tables (tests/kernels/helpers.py)
# cover every phase and transition: thinking with and without the minimum or the min_tokens=1 mask,
# end attempts with extensions of 0-3 tokens left or none (natural end), caps hit inside forced
# extension sequences, the conditional newline of the forced end, answer stop ids, answer and
# total-token limits, DONE rows, padded vocabulary ids with the highest logits, greedy and sampled
# rows, a vocabulary that is not a multiple of the tile, repeated calls (state carried). Tokens, the
# step result and every state column must be identical.
def tri(logits, rows, tables, *a, **k):
    """The Triton op on DEVICE; result on the CPU."""
    dev = lambda x: None if x is None else x.to(DEVICE)   # noqa: E731
    given = k.pop("given", None)
    if given is not None:
        k["given"] = tuple(dev(g) for g in given)
    return _sampling().sample_and_force(dev(logits), dev(rows), tables, *a, **k).cpu()


def check_equal(a: fs.ForceTables, b: fs.ForceTables, ra: torch.Tensor, rb: torch.Tensor, what: str):
    if not torch.equal(ra, rb):
        bad = (ra != rb).any(0).nonzero()[:5, 0].tolist()
        raise AssertionError(f"{what}: step results differ at batch positions {bad}:\n{ra[:, bad]}\n{rb[:, bad]}")
    if not torch.equal(a.state, b.state.cpu()):
        bad = (a.state != b.state.cpu()).nonzero()[:5].tolist()
        raise AssertionError(f"{what}: state differs at (row, column) {bad}")


@needs_triton
@pytest.mark.parametrize("seed,block_v,chunks", [(0, 64, 3), (1, 512, 1), (2, 128, 2)])
def test_kernel_equals_reference_sampling_and_rules(seed, block_v, chunks):
    """The whole op: the sampling pass (greedy and Gumbel rows, padded ids dominating, end ids
    dominating, vocabulary split over 1-3 chunks) and the rules, three steps in a row."""
    R, B = 96, 48
    tables = random_tables(R, seed)
    ref_t, tri_t = clone(tables), clone(tables, DEVICE)
    g = torch.Generator().manual_seed(100 + seed)
    for step in range(2):                                       # state carries over between calls
        rows = torch.randperm(R, generator=g)[:B]
        logits = random_logits(B, 1000 * seed + step)
        r_ref = ref.sample_and_force(logits, rows, ref_t, VOCAB, 7)
        r_tri = tri(logits, rows, tri_t, VOCAB, 7, block_v=block_v, num_chunks=chunks)
        check_equal(ref_t, tri_t, r_ref, r_tri, f"seed {seed} step {step}")
        assert (r_ref[fs.R_TOKEN] < VOCAB).all()               # padded ids never emitted


@needs_triton
@pytest.mark.parametrize("seed", range(3))
def test_rules_equal_reference_over_thousands_of_states(seed):
    """The rules pass alone (candidates given, as the top-k/top-p pre-pass gives them) over
    thousands of random rows: every phase, transition and limit."""
    R, B = 3000, 2500
    tables = random_tables(R, 50 + seed)
    ref_t, tri_t = clone(tables), clone(tables, DEVICE)
    g = torch.Generator().manual_seed(7 + seed)
    counts = torch.zeros(4, dtype=torch.int64)
    finish = torch.zeros(4, dtype=torch.int64)
    for step in range(4):
        rows = torch.randperm(R, generator=g)[:B]
        counts += torch.bincount(ref_t.state[rows, fs.PHASE], minlength=4)
        t_u = torch.randint(0, VOCAB, (B,), generator=g)
        pick = torch.rand(B, generator=g)
        t_u[pick < 0.3] = END_IDS[0]
        t_u[(pick >= 0.3) & (pick < 0.4)] = END_IDS[1]          # also an answer stop id
        t_u[(pick >= 0.4) & (pick < 0.5)] = KEEP_ID             # kept in the context
        t_u[(pick >= 0.5) & (pick < 0.6)] = PAIR[1]             # an end only right after PAIR[0]
        t_m = torch.randint(0, END_IDS[0], (B,), generator=g)
        r_ref = ref.sample_and_force(None, rows, ref_t, VOCAB, 7, given=(t_u, t_m))
        r_tri = tri(None, rows, tri_t, VOCAB, 7, given=(t_u, t_m))
        check_equal(ref_t, tri_t, r_ref, r_tri, f"seed {seed} step {step}")
        finish += torch.bincount(r_ref[fs.R_FINISH][r_ref[fs.R_DONE] == 1], minlength=4)
    assert (counts > 500).all(), counts                         # every phase exercised
    assert (finish[1:] > 20).all(), finish                      # every finish reason


def hand_tables(rows: int, seed: int):
    """random_tables with every row reset for a by-hand case: state zero (thinking, nothing used),
    no caps, greedy, the extension "11 12"."""
    tables = random_tables(rows, seed)
    st, fp, forced = tables[:3]
    st.zero_()
    for c in (fs.MAX_THINK, fs.MAX_ANSWER, fs.MAX_TOKENS):
        st[:, c] = fs.UNLIMITED
    fp[:, fs.INV_TEMP] = 0.0
    forced[:, fs.F_EXT, :2] = torch.tensor([11, 12])
    return tables


def test_transitions_by_hand():
    """A few rows written out by hand from the rules (s1/kernels/force_state.py)."""
    tables = hand_tables(6, 5)
    st, _, forced, stop, _, newline = tables[:6]
    forced[:, fs.F_END, :3] = torch.tensor([20, 21, 22])
    forced[:, fs.F_DELIM, :2] = torch.tensor([30, 31])
    st[:, fs.FORCE_LEN + fs.F_EXT], st[:, fs.FORCE_LEN + fs.F_END], st[:, fs.FORCE_LEN + fs.F_DELIM] = 2, 3, 2
    st[:, fs.END_SKIP_NL] = 1
    newline.zero_()
    newline[40] = 1
    # row 0: thinking, model ends, one wait left -> "11" then FORCE pos 1
    st[0, fs.WAITS_LEFT] = 1
    # row 1: thinking, model ends, no wait -> "30" (delimiter), FORCE pos 1
    # row 2: thinking with MASK_NEXT: end masked -> second choice 5; MASK_NEXT cleared
    st[2, fs.MASK_NEXT] = 1
    # row 3: thinking, emits 40 (a newline token) and reaches the cap -> FORCE F_END from position 1
    st[3, fs.MAX_THINK] = 1
    # row 4: FORCE extension at its last token (12) -> THINK with MASK_NEXT set
    st[4, fs.PHASE], st[4, fs.FORCE_KIND], st[4, fs.FORCE_POS] = fs.FORCE, fs.F_EXT, 1
    # row 5: answer phase, stop id 291 hit -> DONE
    st[5, fs.PHASE] = fs.ANSWER
    logits = torch.zeros(6, V)
    logits[:, 5] = 5.0
    logits[[0, 1, 2, 4, 5], END_IDS[1]] = 10.0
    logits[3, 40] = 10.0
    res = ref.sample_and_force(logits, torch.arange(6), tables, VOCAB, 7)
    assert res[fs.R_TOKEN].tolist() == [11, 30, 5, 40, 12, END_IDS[1]]
    assert st[:, fs.PHASE].tolist() == [fs.FORCE, fs.FORCE, fs.THINK, fs.FORCE, fs.THINK, fs.DONE]
    assert st[0, fs.FORCE_POS] == 1 and st[0, fs.WAITS_USED] == 1 and st[0, fs.THINK_USED] == 1
    assert st[1, fs.FORCE_KIND] == fs.F_DELIM and st[1, fs.THINK_USED] == 0
    assert st[2, fs.MASK_NEXT] == 0 and st[2, fs.THINK_USED] == 1
    assert st[3, fs.FORCE_KIND] == fs.F_END and st[3, fs.FORCE_POS] == 1   # "\n" already there: skipped
    assert st[4, fs.MASK_NEXT] == 1 and st[4, fs.THINK_USED] == 1
    assert res[fs.R_DONE].tolist() == [0, 0, 0, 0, 0, 1] and res[fs.R_FINISH, 5] == fs.FIN_STOP


@pytest.mark.parametrize("impl", ["reference", pytest.param("triton", marks=needs_triton)])
def test_kept_and_two_token_end_rules_by_hand(impl):
    """s1's <|endoftext|> inside thinking (a KEEP end id: emitted, then "Wait" or the delimiter) and
    a two-token end (PAIR[1] right after PAIR[0]: F_DELIM goes on from position 1)."""
    tables = hand_tables(5, 6)
    st, _, forced, _, _, newline = tables[:6]
    forced[:, fs.F_DELIM, :3] = torch.tensor([PAIR[0], 30, 31])
    st[:, fs.FORCE_LEN + fs.F_EXT], st[:, fs.FORCE_LEN + fs.F_END], st[:, fs.FORCE_LEN + fs.F_DELIM] = 2, 1, 3
    st[:, fs.LAST_TOKEN] = 3
    st[0, fs.WAITS_LEFT] = 1                    # row 0: KEEP id, one wait -> the id, then FORCE "11 12"
    # row 1: KEEP id, no wait -> the id, then FORCE the delimiter from position 0
    st[2, fs.WAITS_LEFT] = 1                    # row 2: KEEP id, empty extension -> THINK, MASK_NEXT
    st[2, fs.FORCE_LEN + fs.F_EXT] = 0
    st[3, fs.LAST_TOKEN] = PAIR[0]              # row 3: PAIR[1] after PAIR[0] -> delimiter from position 1
    st[3, fs.THINK_USED] = 5
    # row 4: PAIR[1] after anything else -> an ordinary thinking token
    logits = torch.zeros(5, V)
    logits[:3, KEEP_ID] = 10.0
    logits[3:, PAIR[1]] = 10.0
    if impl == "reference":
        res = ref.sample_and_force(logits, torch.arange(5), tables, VOCAB, 7)
        state = st
    else:
        t = clone(tables, DEVICE)
        res = tri(logits, torch.arange(5), t, VOCAB, 7)
        state = t.state.cpu()
    assert res[fs.R_TOKEN].tolist() == [KEEP_ID, KEEP_ID, KEEP_ID, 30, PAIR[1]]
    assert state[:, fs.PHASE].tolist() == [fs.FORCE, fs.FORCE, fs.THINK, fs.FORCE, fs.THINK]
    assert state[:, fs.FORCE_KIND].tolist()[:2] == [fs.F_EXT, fs.F_DELIM] and state[3, fs.FORCE_KIND] == fs.F_DELIM
    assert state[:2, fs.FORCE_POS].tolist() == [0, 0] and state[3, fs.FORCE_POS] == 2
    assert state[:, fs.THINK_USED].tolist() == [1, 1, 1, 4, 1]     # the kept id counts; the pair's first goes
    assert state[:, fs.MASK_NEXT].tolist() == [0, 0, 1, 0, 0]
    assert state[:, fs.WAITS_USED].tolist() == [1, 0, 1, 0, 0]
