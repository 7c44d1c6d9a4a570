"""The fused sampling + budget-forcing kernel (s1/kernels/sampling.py::sample_and_force, Triton
interpreter) against its torch specification (s1/kernels/reference.py::sample_and_force).

Random tables cover every phase and transition: thinking with and without the minimum or the
min_tokens=1 mask, end attempts with extensions of 0-3 tokens left or none (natural end), caps hit
inside forced extension sequences, the conditional newline of the forced end, answer stop ids,
answer and total-token limits, DONE rows, padded vocabulary ids with the highest logits, greedy
and sampled rows, a vocabulary that is not a multiple of the tile, repeated calls (state carried).
Tokens, the step result and every state column must be identical.
"""
import pytest
import torch

from s1.kernels import force_state as fs
from s1.kernels import reference

triton_sampling = pytest.importorskip("s1.kernels.sampling")
# the kernel runs on CUDA when there is a GPU, else on CPU tensors in the interpreter
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

V, VOCAB = 301, 297            # 4 padded ids; 301 is not a multiple of any tile
END_IDS = [290, 291, 292]


def random_tables(R: int, seed: int, lmax: int = 4, nstop: int = 3) -> fs.ForceTables:
    g = torch.Generator().manual_seed(seed)

    def ri(lo, hi, n=R):
        return torch.randint(lo, hi, (n,), generator=g)

    st = torch.zeros(R, fs.NUM_COLS, dtype=torch.int64)
    big = fs.UNLIMITED
    st[:, fs.PHASE] = ri(0, 4)
    st[:, fs.THINK_USED] = ri(0, 10)
    st[:, fs.MAX_THINK] = torch.where(ri(0, 4) == 0, big, st[:, fs.THINK_USED] + ri(0, 4))
    st[:, fs.MIN_THINK] = torch.where(ri(0, 3) == 0, ri(0, 12), 0)
    st[:, fs.WAITS_LEFT] = ri(0, 3)
    st[:, fs.WAITS_USED] = ri(0, 3)
    st[:, fs.FORCE_LEN + fs.F_EXT] = ri(0, 4)
    st[:, fs.FORCE_LEN + fs.F_END] = ri(1, lmax + 1)
    st[:, fs.FORCE_LEN + fs.F_DELIM] = ri(1, 3)
    kind = ri(0, 3)
    st[:, fs.FORCE_KIND] = kind
    flen = st[:, fs.FORCE_LEN:fs.FORCE_LEN + 3].gather(1, kind[:, None])[:, 0]
    forcing = st[:, fs.PHASE] == fs.FORCE
    st[:, fs.PHASE] = torch.where(forcing & (flen == 0), fs.THINK, st[:, fs.PHASE])  # no empty forced seq
    st[:, fs.FORCE_POS] = torch.where(flen > 0, (ri(0, 100) % flen.clamp(min=1)), 0)
    st[:, fs.ANSWER_USED] = ri(0, 5)
    st[:, fs.MAX_ANSWER] = torch.where(ri(0, 3) == 0, st[:, fs.ANSWER_USED] + ri(1, 3), big)
    st[:, fs.OUT_COUNT] = ri(0, 20)
    st[:, fs.MAX_TOKENS] = torch.where(ri(0, 3) == 0, st[:, fs.OUT_COUNT] + ri(1, 4), big)
    st[:, fs.LAST_TOKEN] = ri(0, VOCAB)
    st[:, fs.MASK_NEXT] = ri(0, 2)
    st[:, fs.END_SKIP_NL] = ri(0, 2)
    st[:, fs.TOP_K] = 0
    st[:, fs.SEED] = torch.randint(0, 2 ** 62, (R,), generator=g)
    fp = torch.zeros(R, 2, dtype=torch.float32)
    fp[:, fs.INV_TEMP] = torch.where(ri(0, 2) == 0, 0.0, torch.rand(R, generator=g) * 2 + 0.3)
    fp[:, fs.TOP_P] = 1.0
    forced = torch.randint(0, VOCAB, (R, 3, lmax), generator=g)
    stop = torch.where(ri(0, 3, R * nstop).view(R, nstop) == 0, -1,
                       torch.randint(0, VOCAB, (R, nstop), generator=g))
    stop[:, 0] = END_IDS[1]
    newline = (torch.rand(V, generator=g) < 0.3).to(torch.uint8)
    return fs.ForceTables(st, fp, forced, stop, torch.tensor(END_IDS), newline)


def random_logits(B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g) * 3
    pick = torch.rand(B, generator=g)
    x[pick < 0.25, END_IDS[0]] = 50.0                         # the model tries to end thinking
    x[(pick >= 0.25) & (pick < 0.35), END_IDS[2]] = 60.0
    x[:, VOCAB:] = 100.0                                       # padded rows: must never win
    return x


def clone(t: fs.ForceTables, device="cpu") -> fs.ForceTables:
    return fs.ForceTables(*(x.clone().to(device) for x in t))


def tri(logits, rows, tables, *a, **k):
    """The Triton op on DEVICE; result on the CPU."""
    dev = lambda x: None if x is None else x.to(DEVICE)   # noqa: E731
    given = k.pop("given", None)
    if given is not None:
        k["given"] = tuple(dev(g) for g in given)
    return triton_sampling.sample_and_force(dev(logits), dev(rows), tables, *a, **k).cpu()


def check_equal(a: fs.ForceTables, b: fs.ForceTables, ra: torch.Tensor, rb: torch.Tensor, what: str):
    if not torch.equal(ra, rb):
        bad = (ra != rb).any(0).nonzero()[:5, 0].tolist()
        raise AssertionError(f"{what}: step results differ at batch positions {bad}:\n{ra[:, bad]}\n{rb[:, bad]}")
    if not torch.equal(a.state, b.state.cpu()):
        bad = (a.state != b.state.cpu()).nonzero()[:5].tolist()
        raise AssertionError(f"{what}: state differs at (row, column) {bad}")


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
        r_ref = reference.sample_and_force(logits, rows, ref_t, VOCAB, 7)
        r_tri = tri(logits, rows, tri_t, VOCAB, 7, block_v=block_v, num_chunks=chunks)
        check_equal(ref_t, tri_t, r_ref, r_tri, f"seed {seed} step {step}")
        assert (r_ref[fs.R_TOKEN] < VOCAB).all()               # padded ids never emitted


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
        t_m = torch.randint(0, END_IDS[0], (B,), generator=g)
        r_ref = reference.sample_and_force(None, rows, ref_t, VOCAB, 7, given=(t_u, t_m))
        r_tri = tri(None, rows, tri_t, VOCAB, 7, given=(t_u, t_m))
        check_equal(ref_t, tri_t, r_ref, r_tri, f"seed {seed} step {step}")
        finish += torch.bincount(r_ref[fs.R_FINISH][r_ref[fs.R_DONE] == 1], minlength=4)
    assert (counts > 500).all(), counts                         # every phase exercised
    assert (finish[1:] > 20).all(), finish                      # every finish reason


def test_transitions_by_hand():
    """A few rows written out by hand from the rules (s1/kernels/force_state.py)."""
    tables = random_tables(6, 5)
    st, fp, forced, stop, _, newline = tables
    st.zero_()
    for c in (fs.MAX_THINK, fs.MAX_ANSWER, fs.MAX_TOKENS):
        st[:, c] = fs.UNLIMITED
    fp[:, fs.INV_TEMP] = 0.0
    forced[:, fs.F_EXT, :2] = torch.tensor([11, 12])
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
    res = reference.sample_and_force(logits, torch.arange(6), tables, VOCAB, 7)
    assert res[fs.R_TOKEN].tolist() == [11, 30, 5, 40, 12, END_IDS[1]]
    assert st[:, fs.PHASE].tolist() == [fs.FORCE, fs.FORCE, fs.THINK, fs.FORCE, fs.THINK, fs.DONE]
    assert st[0, fs.FORCE_POS] == 1 and st[0, fs.WAITS_USED] == 1 and st[0, fs.THINK_USED] == 1
    assert st[1, fs.FORCE_KIND] == fs.F_DELIM and st[1, fs.THINK_USED] == 0
    assert st[2, fs.MASK_NEXT] == 0 and st[2, fs.THINK_USED] == 1
    assert st[3, fs.FORCE_KIND] == fs.F_END and st[3, fs.FORCE_POS] == 1   # "\n" already there: skipped
    assert st[4, fs.MASK_NEXT] == 1 and st[4, fs.THINK_USED] == 1
    assert res[fs.R_DONE].tolist() == [0, 0, 0, 0, 0, 1] and res[fs.R_FINISH, 5] == fs.FIN_STOP
