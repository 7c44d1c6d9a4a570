"""`EngineConfig`: every setting of the engine in one place, checked once.

Names follow vLLM where it has the same knob (max_num_seqs, max_num_batched_tokens,
gpu_memory_utilization, enable_prefix_caching, max_model_len, enforce_eager).
"""
from __future__ import annotations

from dataclasses import dataclass

from s1.common import dtypes

KERNEL_BACKENDS = ("auto", "torch", "triton")


@dataclass
class EngineConfig:
    model: str | None = None                 # HF-format checkpoint folder (or pass a model object)
    tokenizer: str | None = None             # tokenizer folder (default: the model folder)
    device: str = "cpu"
    dtype: str | None = None                 # None / "auto": the checkpoint's dtype
    page_size: int = 16                      # tokens per KV page
    max_num_seqs: int = 256                  # running sequences per step (= device request slots)
    max_num_batched_tokens: int = 8192       # prefill tokens per step (a longer prompt runs alone)
    gpu_memory_utilization: float = 0.9      # share of the GPU the engine may fill (KV cache sizing)
    num_pages: int | None = None             # KV pages; None: sized from free memory (CPU: <= 1 GiB)
    enable_prefix_caching: bool = True
    max_model_len: int | None = None         # context; None: the model's max_position_embeddings
    enforce_eager: bool = False              # no CUDA graphs
    async_output: bool | None = None         # None: on for CUDA (results read one step late)
    kernels: str | None = None               # auto | torch | triton; None: the kernel switch's choice
    tensor_parallel_size: int = 1            # ranks one engine spans (one process each, under torchrun)

    def __post_init__(self):
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)

        for f in ("page_size", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
            v = getattr(self, f)
            need(isinstance(v, int) and v >= 1, f"{f}={v!r} must be an integer >= 1")
        need(isinstance(self.gpu_memory_utilization, (int, float)) and 0 < self.gpu_memory_utilization <= 1,
             f"gpu_memory_utilization={self.gpu_memory_utilization!r} must lie in (0, 1]")
        need(self.num_pages is None or (isinstance(self.num_pages, int) and self.num_pages >= 1),
             f"num_pages={self.num_pages!r} must be an integer >= 1 or None")
        need(self.max_model_len is None or (isinstance(self.max_model_len, int) and self.max_model_len >= 2),
             f"max_model_len={self.max_model_len!r} must be an integer >= 2 or None")
        need(self.kernels is None or self.kernels in KERNEL_BACKENDS,
             f"kernels={self.kernels!r}: expected one of {KERNEL_BACKENDS}")
        if self.dtype is not None:
            self.dtype = dtypes.canonical(self.dtype, allow_auto=True)
            if self.dtype == "auto":
                self.dtype = None
