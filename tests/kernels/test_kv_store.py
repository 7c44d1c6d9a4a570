"""Triton K/V page store vs its PyTorch reference, in the Triton interpreter (a child process
when this one was started without TRITON_INTERPRET=1: tests/helpers.py::in_interpreter)."""
import torch

from tests.helpers import in_interpreter


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


def check_all_dtypes() -> None:
    for dtype in ("float32", "float16"):
        check_kv_store(dtype)


def test_kv_store_triton_vs_reference():
    """fp32, fp16 (one interpreter process for both)."""
    in_interpreter(check_all_dtypes)
