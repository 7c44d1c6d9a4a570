"""Triton paged decode attention vs its PyTorch reference, and the reference vs dense attention.

Run in the Triton interpreter (TRITON_INTERPRET=1). The flag must be set before Triton compiles
the kernels, so when this pytest process was started without it the checks run in a child
process with the flag set (tests/helpers.py::in_interpreter).
"""
import torch

from tests.helpers import in_interpreter

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


# ---------------------------------------------------------------------------- checks (interpreter)
def check_paged_attention(dtype_name: str) -> None:
    from s1.kernels.paged_attention import paged_attention_triton
    from s1.kernels.reference import paged_attention as paged_attention_reference
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    # (Hq, Hk, D, page, context lens): GQA 7:1 and 5:1, head_dim 64/128, odd page sizes,
    # contexts of 1 token, not a multiple of the block, spanning many pages
    shapes = [(7, 1, 64, 4, [1, 17, 45]), (10, 2, 128, 16, [33, 5]), (4, 4, 32, 3, [20, 7, 1, 9])]
    worst = 0.0
    for Hq, Hk, D, page, lens in shapes:
        B = len(lens)
        max_pages = max(-(-n // page) for n in lens)
        P = B * max_pages + 3
        kc = torch.randn(P, page, Hk, D, generator=g).to(dtype)
        vc = torch.randn(P, page, Hk, D, generator=g).to(dtype)
        q = torch.randn(B, Hq, D, generator=g).to(dtype)
        bt = torch.randperm(P, generator=g)[:B * max_pages].view(B, max_pages).to(torch.int32)
        cl = torch.tensor(lens, dtype=torch.int32)
        ref = paged_attention_reference(q, kc, vc, bt, cl, D ** -0.5)
        exact = paged_attention_reference(q.double(), kc.double(), vc.double(), bt, cl, D ** -0.5)
        err_ref = (ref.double() - exact).abs().max().item()
        # broadcast-reduce path (exact fp32) and tensor-core tl.dot path (q rounded to the cache
        # dtype: 16-bit tolerance), with the default split, one split, and many tiny splits (more
        # than the merge kernel's 16 per pass: the online merge takes several passes)
        configs = [(None, 16, False), (1, 16, False), (3, 4, False), (20, 2, False), (None, 16, True),
                   (2, 32, True)]
        for splits, block_n, use_dot in configs:
            if use_dot and dtype == torch.bfloat16:
                continue  # bf16 arithmetic is not emulated correctly by the interpreter
            out = paged_attention_triton(q, kc, vc, bt, cl, D ** -0.5, num_splits=splits, block_n=block_n,
                                         use_dot=use_dot)
            err = (out.double() - exact).abs().max().item()
            worst = max(worst, err)
            tol = TOL[torch.float16] if use_dot and dtype == torch.float16 else TOL[dtype]
            assert err <= tol + 2 * err_ref, (Hq, Hk, D, page, splits, use_dot, err, err_ref)
        # fixed grid from an upper bound (CUDA-graph mode) gives the same result
        out = paged_attention_triton(q, kc, vc, bt, cl, D ** -0.5, max_context=max_pages * page + 40,
                                     use_dot=False)
        assert (out.double() - exact).abs().max().item() <= TOL[dtype] + 2 * err_ref
    print(f"paged_attention {dtype_name}: worst abs error vs fp64 {worst:.2e}")


# ---------------------------------------------------------------------------- tests
def check_all_dtypes() -> None:
    for dtype in ("float32", "float16", "bfloat16"):
        check_paged_attention(dtype)


def test_paged_attention_triton_vs_reference():
    """fp32, fp16, bf16 (one interpreter process for all: start-up dominates)."""
    in_interpreter(check_all_dtypes)


def test_paged_attention_reference_matches_dense_attention():
    """The reference itself vs plain softmax attention over contiguous K/V (no paging)."""
    from s1.kernels.reference import paged_attention as paged_attention_reference
    g = torch.Generator().manual_seed(2)
    B, Hq, Hk, D, page, n = 2, 6, 2, 16, 4, 10
    k = torch.randn(B, n, Hk, D, generator=g)
    v = torch.randn(B, n, Hk, D, generator=g)
    q = torch.randn(B, Hq, D, generator=g)
    P = 8
    kc, vc = torch.zeros(P, page, Hk, D), torch.zeros(P, page, Hk, D)
    bt = torch.tensor([[5, 1, 7], [0, 6, 2]], dtype=torch.int32)
    for b in range(B):
        for t in range(n):
            kc[bt[b, t // page], t % page] = k[b, t]
            vc[bt[b, t // page], t % page] = v[b, t]
    out = paged_attention_reference(q, kc, vc, bt, torch.tensor([n, 7], dtype=torch.int32), 0.25)
    for b, ctx in enumerate([n, 7]):
        kk = k[b, :ctx].repeat_interleave(3, dim=1).transpose(0, 1)  # [Hq, ctx, D]
        vv = v[b, :ctx].repeat_interleave(3, dim=1).transpose(0, 1)
        want = torch.softmax((q[b][:, None, :] @ kk.transpose(1, 2)) * 0.25, -1) @ vv
        torch.testing.assert_close(out[b], want[:, 0], rtol=1e-5, atol=1e-5)

