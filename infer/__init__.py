"""Inference: the batched decoder with budget forcing (issue 4).

Public API: `LLM`, `SamplingParams`, `GenerationOutput` (see infer/llm.py, infer/sampling.py).
"""
from infer.llm import LLM
from infer.request import GenerationOutput
from infer.sampling import SamplingParams

__all__ = ["LLM", "SamplingParams", "GenerationOutput"]
