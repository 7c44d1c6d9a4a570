import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("S1_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The suite's models are tiny: like the `s1` commands (s1/common/threads.py), run them on one CPU
# thread unless S1_THREADS says otherwise. torch's one-thread-per-core default made the suite
# ~10x slower on a busy 2-core machine, and the subprocesses the tests start through
# the CLIs choose one thread too, so in-process and subprocess runs reduce in the same order.
from s1.common.threads import configure_threads  # noqa: E402

configure_threads(None, work_hint="tiny", device="cpu")


def require_shared_data() -> pathlib.Path:
    """Path of ../shared/data; skip (or fail, when S1_REQUIRE_SHARED_DATA=1, as in CI) if absent."""
    if not SHARED_DATA.is_dir():
        msg = f"shared data folder {SHARED_DATA} is absent (set S1_SHARED_DATA or place it beside the repo)"
        if os.environ.get("S1_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture
def shared_data() -> pathlib.Path:
    return require_shared_data()


@pytest.fixture
def qwen_tokenizer_dir(shared_data) -> pathlib.Path:
    return shared_data / "qwen2.5-tokenizer"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """CLI mains called in-process (e.g. `--threads 1`) must not leak their torch thread count into
    later tests: bit-exact comparisons against a subprocess (which uses the default count) depend on
    it, since reductions split differently across threads."""
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- the engine tests' model
# (tests/infer/, tests/bench/): a tiny random Qwen2 checkpoint written by transformers with the real
# Qwen2.5 tokenizer; the oracles and helpers that go with it are in tests/helpers.py.
@pytest.fixture
def torch_backend():
    """The PyTorch reference kernels for the test (modules opt in: pytestmark = usefixtures)."""
    from s1 import kernels
    with kernels.use_backend("torch"):
        yield


@pytest.fixture(scope="module")
def tok():
    from s1.model.tokenizer import Tokenizer
    return Tokenizer.from_pretrained(require_shared_data() / "qwen2.5-tokenizer")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tok):
    """(transformers model, its checkpoint folder): vocabulary 151,936, hidden 64, 2 layers."""
    from tests.hf_utils import random_hf_model
    from tests.helpers import VOCAB
    hf = random_hf_model(seed=3, std=0.08, vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                         max_position_embeddings=512)
    d = tmp_path_factory.mktemp("tiny_qwen")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return hf, d


@pytest.fixture(scope="module")
def model(ckpt):
    import torch

    from s1.model.loading import load_model
    return load_model(ckpt[1], dtype=torch.float32)


@pytest.fixture(scope="session")
def think_tokenizer_dir(tmp_path_factory):
    """Qwen2.5's tokenizer with <think> / </think> added and a Qwen3-style chat template
    (tests/helpers.py make_think_tokenizer): the stand-in for Qwen3 / R1-distill tokenizers."""
    from tests.helpers import make_think_tokenizer
    return make_think_tokenizer(require_shared_data() / "qwen2.5-tokenizer", tmp_path_factory.mktemp("think-tok"))
