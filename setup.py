from setuptools import setup

setup(
    name="s1-lowlevel",
    version="0.1.0",
    description="s1 (simple test-time scaling) reproduced in low-level PyTorch + Triton",
    python_requires=">=3.10",
    packages=["common", "kernels", "model", "train", "infer", "evaluation", "curate", "pipelines", "bench"],
    install_requires=[
        "torch>=2.4",
        "triton",
        "safetensors",
        "tokenizers",
        "numpy",
        "datasets",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"test": ["pytest", "transformers"]},
    py_modules=["s1cli"],
    entry_points={"console_scripts": ["s1=s1cli:main"]},
)
