"""--model as a Hugging Face Hub id in the local HF cache (s1/common/hub.py), with a fake cache folder."""
import os

import pytest

from s1.common.hub import ModelNotFound, cached_snapshot, hf_hub_cache, looks_like_hub_id, resolve_model_path

REV = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"


def fake_cache(root, repo_id="Qwen/Qwen2.5-0.5B-Instruct", refs=True):
    """huggingface_hub's layout: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for rev in (OLD, REV):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        (snap / "config.json").write_text('{"rev": "%s"}' % rev)
    os.utime(repo / "snapshots" / OLD, (2e9, 2e9))          # the newest by mtime is NOT refs/main's
    if refs:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REV + "\n")
        (repo / "refs" / "v1").write_text(OLD)
    return repo


def test_cache_folder_follows_huggingface_hub():
    assert hf_hub_cache({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}) == hf_hub_cache({"HF_HUB_CACHE": "/a"})
    assert str(hf_hub_cache({"HF_HUB_CACHE": "/a"})) == "/a"
    assert str(hf_hub_cache({"HUGGINGFACE_HUB_CACHE": "/legacy"})) == "/legacy"
    assert str(hf_hub_cache({"HF_HOME": "/b"})) == "/b/hub"
    assert str(hf_hub_cache({"XDG_CACHE_HOME": "/x", "HOME": "/h"})) == "/x/huggingface/hub"
    assert str(hf_hub_cache({"HOME": "/h"})) == "/h/.cache/huggingface/hub"


def test_hub_id_shapes():
    for yes in ("Qwen/Qwen2.5-0.5B-Instruct", "simplescaling/s1-32B", "org/name@v1"):
        assert looks_like_hub_id(yes), yes
    for no in ("ckpt", "./a/b", "/abs/path", "a/b/c", "~/x/y", "../shared/data"):
        assert not looks_like_hub_id(no), no


def test_resolves_refs_main_then_revisions(tmp_path):
    fake_cache(tmp_path)
    env = {"HF_HUB_CACHE": str(tmp_path)}
    snap = resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", environ=env)
    assert snap == str(tmp_path / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / REV)
    assert cached_snapshot("Qwen/Qwen2.5-0.5B-Instruct@v1", env).name == OLD        # another ref
    assert cached_snapshot(f"Qwen/Qwen2.5-0.5B-Instruct@{OLD}", env).name == OLD   # a commit
    assert cached_snapshot("Qwen/Qwen2.5-0.5B-Instruct@nope", env) is None
    local = tmp_path / "local"
    local.mkdir()
    assert resolve_model_path(str(local), environ=env) == str(local)             # folders as they are


def test_without_refs_the_newest_snapshot(tmp_path):
    fake_cache(tmp_path / "hub", "org/m", refs=False)
    assert cached_snapshot("org/m", {"HF_HOME": str(tmp_path)}).name == OLD


def test_absent_model_names_the_download_command(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path)}
    with pytest.raises(ModelNotFound) as e:
        resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", environ=env)
    msg = str(e.value)
    assert "--model Qwen/Qwen2.5-0.5B-Instruct" in msg and str(tmp_path) in msg
    assert "hf download Qwen/Qwen2.5-0.5B-Instruct" in msg and "huggingface-cli" not in msg   # hf: huggingface_hub 1.x
    with pytest.raises(ModelNotFound, match="--revision v2"):
        resolve_model_path("org/m@v2", environ=env)
    with pytest.raises(ModelNotFound, match="no such folder"):
        resolve_model_path(str(tmp_path / "a" / "b" / "c"), environ=env)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelNotFound, match="not a folder"):
        resolve_model_path(str(f), environ=env)


def test_load_model_and_tokenizer_take_a_cached_hub_id(tmp_path, monkeypatch, qwen_tokenizer_dir):
    """The one resolver behind load_model, Tokenizer.from_pretrained, s1 generate and s1 train."""
    import shutil

    from s1.model.loading import load_model, save_random_checkpoint
    from s1.model.tokenizer import Tokenizer
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / REV
    save_random_checkpoint(snap, "smoke", tokenizer_dir=qwen_tokenizer_dir, hidden_size=32, intermediate_size=64,
                           torch_dtype="float32")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    m = load_model("org/tiny")
    assert m.config.hidden_size == 32
    assert Tokenizer.from_pretrained("org/tiny").path == str(snap)
    with pytest.raises(FileNotFoundError, match="hf download org/absent"):
        load_model("org/absent")
    # s1 train resolves --model before anything loads
    from s1.train.cli import parse_args
    cfg = parse_args(["--model", "org/tiny", "--data", "d.json", "--out", str(tmp_path / "o")])
    assert cfg.model == str(snap)
    from s1.train.cli import main
    assert main(["--model", "org/absent", "--data", "d.json", "--out", str(tmp_path / "o")]) == 2
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


# ----------------------------------------------------------------------------- datasets offline
def test_hub_address_and_offline_flags():
    from s1.common.hub import hub_address, hub_offline
    assert hub_address({}) == ("huggingface.co", 443)
    assert hub_address({"HF_ENDPOINT": "http://127.0.0.1:9"}) == ("127.0.0.1", 9)
    proxied = {"HTTPS_PROXY": "http://proxy.local:3128", "HF_ENDPOINT": "https://x.org"}
    assert hub_address(proxied) == ("proxy.local", 3128)
    assert hub_offline({"HF_HUB_OFFLINE": "1"}) and hub_offline({"HF_DATASETS_OFFLINE": "true"})
    assert not hub_offline({}) and not hub_offline({"HF_HUB_OFFLINE": "0"})


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable"])
def test_uncached_gpqa_fails_at_once_naming_the_fetch_command(tmp_path, offline):
    """GPQA (a Hub dataset) not in the cache and no Hub: an error at once (it used to retry the
    network for ~25 s), naming `hf auth login` (gated) and the `hf download` command; no network
    is used (an empty cache; the Hub's address is a closed local port, or offline mode is set)."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY",
                        "https_proxy", "ALL_PROXY", "all_proxy", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))
    if offline == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    code = ("import time, datasets; from s1.evaluation.tasks import TaskError, load_task\n"
            "t = time.perf_counter()\n"
            "try:\n    load_task('gpqa_diamond')\nexcept TaskError as e:\n    print(repr(str(e)))\n"
            "print(time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msg, seconds = r.stdout.strip().splitlines()[-2:]
    assert float(seconds) < 5, (seconds, msg)
    assert "not in the local datasets cache" in msg and "out of reach" in msg, msg
    assert "hf auth login" in msg and "hf download --repo-type dataset Idavidrein/gpqa gpqa_diamond.csv" in msg, msg
    assert "--data-file" in msg and "huggingface-cli" not in msg, msg
