"""The CPU thread policy (s1/common/threads.py) and where the commands apply it."""
import pytest
import torch

from s1.common.threads import ENV_VAR, TINY_PARAMS, choose_threads, configure_threads, estimate_params, is_tiny


def test_policy_order_flag_then_env_then_work():
    env = {}
    assert choose_threads(3, work_hint="tiny", environ={ENV_VAR: "2"}) == 3       # the flag wins
    assert choose_threads(None, work_hint="tiny", environ={ENV_VAR: "2"}) == 2    # then S1_THREADS
    assert choose_threads(None, work_hint="large", environ={ENV_VAR: "4"}) == 4
    assert choose_threads(None, work_hint="tiny", environ=env) == 1               # tiny work: one thread
    assert choose_threads(None, work_hint=1_000_000, environ=env) == 1
    assert choose_threads(None, work_hint=TINY_PARAMS, environ=env) is None       # large: torch's default
    assert choose_threads(None, work_hint="large", environ=env) is None
    assert choose_threads(None, work_hint=None, environ=env) is None              # unknown size: default
    assert choose_threads(None, work_hint="tiny", device="cuda", environ=env) is None   # GPU runs
    assert choose_threads(None, work_hint="tiny", device="cuda:1", environ={ENV_VAR: "2"}) == 2


def test_bad_counts_name_the_flag_or_variable():
    with pytest.raises(ValueError, match="--threads"):
        choose_threads(0)
    with pytest.raises(ValueError, match=ENV_VAR):
        choose_threads(None, environ={ENV_VAR: "many"})
    with pytest.raises(ValueError, match=ENV_VAR):
        choose_threads(None, environ={ENV_VAR: "-1"})
    with pytest.raises(ValueError, match="work_hint"):
        is_tiny("small")


def test_estimate_params_matches_the_model():
    from s1.model.config import shape_config
    from s1.model.qwen2 import Qwen2ForCausalLM
    for name, kw in [("smoke", {}), ("smoke", {"tie_word_embeddings": False}), ("0.5B", {})]:
        cfg = shape_config(name, **kw)
        with torch.device("meta"):
            n = sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters())
        assert estimate_params(cfg.to_dict()) == n, name
    assert is_tiny(shape_config("smoke").to_dict()) and not is_tiny(shape_config("0.5B").to_dict())
    assert is_tiny({"hidden_size": 8}) is None          # an unreadable config says nothing


def test_configure_threads_sets_torch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert configure_threads(3) == 3 == torch.get_num_threads()
    assert configure_threads(None, work_hint="tiny") == 1 == torch.get_num_threads()
    monkeypatch.setenv(ENV_VAR, "2")
    assert configure_threads(None, work_hint="tiny") == 2 == torch.get_num_threads()


def test_s1_demo_applies_the_policy_before_running(monkeypatch, capsys):
    """`s1 demo` (pipelines.demo.main) sets the thread count before its first stage runs."""
    from s1 import cli as s1cli
    from s1.pipelines import demo
    seen = []
    monkeypatch.setattr(demo, "run", lambda s, out, progress=True: seen.append((s["threads"], torch.get_num_threads())))
    monkeypatch.delenv(ENV_VAR, raising=False)
    torch.set_num_threads(2)
    assert s1cli.main(["demo", "--quick"]) == 0 and seen[-1] == (1, 1)
    assert demo.main(["--threads", "3", "--quick"]) == 0 and seen[-1] == (3, 3)
    monkeypatch.setenv(ENV_VAR, "2")
    assert demo.main([]) == 0 and seen[-1] == (2, 2)
    with pytest.raises(SystemExit) as e:                                     # a clear error, exit 2
        demo.main(["--threads", "0"])
    assert e.value.code == 2 and "--threads: expected a positive integer" in capsys.readouterr().err
    assert len(seen) == 3


def test_the_suite_itself_runs_single_threaded(monkeypatch):
    """tests/conftest.py applies the same policy to the test process (tiny models only)."""
    import os
    if os.environ.get(ENV_VAR):
        pytest.skip(f"{ENV_VAR} is set")
    import tests.conftest  # noqa: F401
    # the autouse fixture restores the session's count after every test: it is the policy's choice
    assert torch.get_num_threads() == 1
