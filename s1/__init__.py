"""s1 (simple test-time scaling) in low-level PyTorch + Triton: one import package.

    s1.kernels      Triton kernels, each beside its plain PyTorch reference (one switch: get_ops)
    s1.model        Qwen2 config, decoder, HF-format loading and saving, tokenizer + s1's format
    s1.train        SFT on FSDP2 (`torchrun -m s1.train`)
    s1.infer        paged engine with budget forcing in the sampler (`LLM`, `SamplingParams`)
    s1.curate       s1K-style selection from a question pool
    s1.evaluation   tasks, grading, metrics, methods, budget sweeps, reports
    s1.serve        the OpenAI-compatible server
    s1.pipelines    the toy task and `s1 demo`
    s1.common       JSONL, paths, dtype names, provenance (pure Python)
    s1.cli          the `s1` command (`python -m s1`)

Importing `s1` loads nothing but this file: every stage imports torch only when it runs.
"""
__version__ = "0.1.0"   # the one version: setup.py reads it, `s1 --version` prints it
