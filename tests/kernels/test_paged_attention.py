"""Triton paged decode attention and K/V page store vs their PyTorch references.

Run in the Triton interpreter (TRITON_INTERPRET=1). The flag must be set before Triton compiles
the kernels, so when this pytest process was started without it the checks run in a child
process (this file executed as a script) with the flag set.
"""
import os
import subprocess
import sys

import pytest
import torch

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _interp() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _in_interpreter(name: str, *args: str) -> None:
    if _interp():
        globals()[name](*args)
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), name, *args], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{name}{args} failed in the interpreter:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    print(r.stdout)


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


def check_kv_store(dtype_name: str) -> None:
    from s1.kernels.kv_store import kv_store_triton
    from s1.kernels.reference import kv_store as kv_store_reference
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(1)
    P, page, Hk, D = 6, 4, 2, 48
    kc = torch.randn(P, page, Hk, D, generator=g).to(dtype)
    vc = torch.randn(P, page, Hk, D, generator=g).to(dtype)
    # k/v as strided views of a fused qkv projection, as the model produces them
    qkv = torch.randn(5, 3, Hk, D, generator=g).to(dtype)
    k, v = qkv[:, 1], qkv[:, 2]
    slots = torch.tensor([0, 23, -1, 9, 10])
    a, b = kc.clone(), vc.clone()
    kv_store_triton(k, v, a, b, slots)
    c, d = kc.clone(), vc.clone()
    kv_store_reference(k, v, c, d, slots)
    assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(a, kc)


def context_model(seed: int):
    """(tiny random Qwen2 with the real 151,936 vocabulary, Qwen2.5 tokenizer) whose attention and
    MLP weights are scaled up so that the context decides the next token (with the default init
    the model just repeats its input token, and an engine comparison would prove nothing)."""
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.model.tokenizer import Tokenizer
    from tests.conftest import SHARED_DATA
    tok = Tokenizer.from_pretrained(SHARED_DATA / "qwen2.5-tokenizer")
    cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, torch_dtype="float32")
    m = Qwen2ForCausalLM(cfg)
    m.init_weights(seed=seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "proj" in name and name.endswith("weight"):
                p.mul_(10.0)
        m.model.embed_tokens.weight.mul_(4.0)
    return m.eval(), tok


def check_engine_with_triton_cache() -> None:
    """The engine with the Triton store + paged-attention kernels == with the references."""
    from s1 import kernels
    from s1.infer import LLM, SamplingParams
    m, tok = context_model(seed=0)
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300], [42] * 11, [1, 2, 3, 300]]
    sp = SamplingParams(max_tokens=10, ignore_eos=True)
    outs = {}
    import types

    import s1.kernels.triton_ops as tops
    from s1.kernels import reference
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


# ---------------------------------------------------------------------------- tests
def check_all_kernels() -> None:
    for dtype in ("float32", "float16", "bfloat16"):
        check_paged_attention(dtype)
    for dtype in ("float32", "float16"):
        check_kv_store(dtype)


def test_paged_attention_and_kv_store_triton_vs_reference():
    """fp32, fp16, bf16 (one interpreter process for all: start-up dominates)."""
    _in_interpreter("check_all_kernels")


def test_engine_with_triton_cache_kernels(shared_data):
    _in_interpreter("check_engine_with_triton_cache")


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


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    globals()[sys.argv[1]](*sys.argv[2:])
