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
