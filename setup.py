import re
from pathlib import Path

from setuptools import find_packages, setup

# one version: s1.__version__ (what `s1 --version` prints)
VERSION = re.search(r'^__version__ = "([^"]+)"', (Path(__file__).parent / "s1" / "__init__.py").read_text(),
                    re.M).group(1)

# httpx: the HTTP client of `python -m bench.serve` (async streaming, many connections) and of
# FastAPI's TestClient; fastapi and uvicorn do not bring it (huggingface_hub 1.x uses httpx2)
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "httpx>=0.27"]

setup(
    name="s1-lowlevel",
    version=VERSION,
    description="s1 (simple test-time scaling) reproduced in low-level PyTorch + Triton",
    python_requires=">=3.10",
    # exactly one top-level import name: s1 (bench/ and tests/ stay in the repository)
    packages=find_packages(include=["s1", "s1.*"]),
    install_requires=[
        "torch>=2.4",
        "triton",
        "safetensors",
        "tokenizers",
        "numpy",
        "datasets",
        "tqdm",
        "matplotlib",
        "jinja2",   # checkpoints' chat templates (s1/model/tokenizer.py), rendered as transformers does
    ],
    extras_require={
        "serve": SERVE,   # `s1 serve`: the ASGI stack
        "judge": ["openai>=1.40"],   # `s1 eval --judge-url`: s1's judge on an OpenAI-compatible endpoint
        "mathverify": ["math-verify"],   # Hugging Face Math-Verify as a grading backend (s1/evaluation/mathverify.py)
        # the suite tests the server with the real openai client (httpx is its HTTP library)
        "test": ["pytest", "transformers", "openai>=1.40", "httpx>=0.27", *SERVE],
    },
    entry_points={"console_scripts": ["s1=s1.cli:main"]},
)
