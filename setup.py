import re
from pathlib import Path

from setuptools import find_packages, setup

# one version: s1.__version__ (what `s1 --version` prints)
VERSION = re.search(r'^__version__ = "([^"]+)"', (Path(__file__).parent / "s1" / "__init__.py").read_text(),
                    re.M).group(1)

# Lower bounds: releases that the tests exercising each dependency have passed on; no upper caps
# (none is known to break). The oldest set, together (Python 3.11, torch 2.13.0 CPU): tokenizers
# 0.20.3, safetensors 0.4.3, datasets 3.0.2, numpy 2.0.2, tqdm 4.66.3, matplotlib 3.9.0, jinja2 3.1.0,
# triton 3.6.0 (interpreter), fastapi 0.110.0, uvicorn 0.29.0, httpx 0.27.0, openai 1.45.0, pytest
# 8.0.0 (tests of loading, model, tokenizer, chat template, serve, eval, data, curate, train, kernels,
# generate, engine); transformers 4.56.2 for the tests that compare against it. The newest releases:
# .ci/run installs them in a new environment every run (its log lists them).
SERVE = [
    "fastapi>=0.110.0",
    "uvicorn>=0.29.0",
    # the HTTP client of `python -m bench.serve` (async streaming, many connections) and of
    # FastAPI's TestClient; fastapi and uvicorn do not bring it
    "httpx>=0.27.0",
]

setup(
    name="s1-lowlevel",
    version=VERSION,
    description="s1 (simple test-time scaling) reproduced in low-level PyTorch + Triton",
    python_requires=">=3.11",   # the suite runs on 3.11; 3.10 untested (no CPU torch build for it here)
    # exactly one top-level import name: s1 (bench/ and tests/ stay in the repository)
    packages=find_packages(include=["s1", "s1.*"]),
    install_requires=[
        # the suite: 2.13.0 (CPU); the GPU measurements: 2.11.0+cu130. Nothing older has run.
        "torch>=2.11",
        "triton>=3.6.0",          # GPU measurements and interpreter tests on 3.6.0; 3.9.0 here
        "safetensors>=0.4.3",
        "tokenizers>=0.20.3",
        # 2.x: the newest pyarrow (which s1 imports through datasets) refuses numpy 1.26 at import
        "numpy>=2.0.2",
        "datasets>=3.0.2",
        "tqdm>=4.66.3",
        "matplotlib>=3.9.0",
        "jinja2>=3.1.0",   # checkpoints' chat templates (s1/model/tokenizer.py), rendered as transformers does
    ],
    extras_require={
        "serve": SERVE,   # `s1 serve`: the ASGI stack
        "judge": ["openai>=1.45.0"],   # `s1 eval --judge-url`: s1's judge on an OpenAI-compatible endpoint
        "mathverify": ["math-verify>=0.9.0"],   # Hugging Face Math-Verify as a grading backend (s1/evaluation/mathverify.py)
        # the suite tests the server with the real openai client (httpx is its HTTP library);
        # openai 1.40 lacks usage.completion_tokens_details.reasoning_tokens (1.45 has it);
        # transformers before 4.56 lacks from_pretrained(dtype=...), which the tests use
        # math-verify: so the suite runs the Math-Verify grading backend's tests instead of skipping them
        # pytest-xdist: pytest.ini runs the suite on one worker per core (up to 4); every test is
        # single-threaded (tests/conftest.py), so on CI's 2 cores one worker would leave a core idle
        # prometheus_client: its text-format parser checks /metrics' exposition (s1 serve writes it itself)
        "test": ["pytest>=8.0.0", "pytest-xdist>=3.8.0", "transformers>=4.56.2", "openai>=1.45.0", "httpx>=0.27.0",
                 "math-verify>=0.9.0", "prometheus_client>=0.20.0", *SERVE],
    },
    entry_points={"console_scripts": ["s1=s1.cli:main"]},
)
