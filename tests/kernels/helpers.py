"""Helpers of the kernel tests: NaN-poisoned torch.empty (tests/kernels/test_triton_ops.py,
test_sampling.py), and random budget-forcing tables and logits for the sample_and_force op
(s1/kernels/force_state.py layout), shared by tests/kernels/test_sampling.py and the sharded
sampler of tests/infer/test_tensor_parallel.py."""
import contextlib

import torch

from s1.kernels import force_state as fs

V, VOCAB = 301, 297            # 4 padded ids; 301 is not a multiple of any tile


END_IDS = [290, 291, 292]
KEEP_ID = END_IDS[2]           # ends thinking and stays in the context (s1's <|endoftext|>)
PAIR = (7, 8)                  # a two-token end: 8 right after 7 (s1's step-conditional "<|im_start|>0")
END_RULES = [[*END_IDS, PAIR[1]], [-1, -1, -1, PAIR[0]], [0, 0, 1, 0]]


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
    st[:, fs.LAST_TOKEN] = torch.where(ri(0, 4) == 0, PAIR[0], ri(0, VOCAB))
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
    return fs.ForceTables(st, fp, forced, stop, torch.tensor(END_IDS), newline, torch.tensor(END_RULES))


def random_logits(B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g) * 3
    pick = torch.rand(B, generator=g)
    x[pick < 0.25, END_IDS[0]] = 50.0                         # the model tries to end thinking
    x[(pick >= 0.25) & (pick < 0.35), END_IDS[2]] = 60.0
    x[(pick >= 0.35) & (pick < 0.45), PAIR[1]] = 55.0
    x[:, VOCAB:] = 100.0                                       # padded rows: must never win
    return x


def clone(t: fs.ForceTables, device="cpu") -> fs.ForceTables:
    return fs.ForceTables(*(None if x is None else x.clone().to(device) for x in t))


@contextlib.contextmanager
def poisoned_allocations():
    """torch.empty / empty_like return NaN-filled (float) or huge-valued (int) tensors."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype in (torch.int32, torch.int64):
            t.fill_(2 ** 30)
        return t

    torch.empty = lambda *a, **k: fill(real_empty(*a, **k))
    torch.empty_like = lambda *a, **k: fill(real_empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = real_empty, real_empty_like
