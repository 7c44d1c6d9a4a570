"""`--model` as a local folder or a Hugging Face Hub id already in the local HF cache.

    resolve_model_path("ckpt/s1-32B")              -> "ckpt/s1-32B"            (a folder: as is)
    resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")
        -> "~/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/<rev>"

The cache layout is huggingface_hub's: <cache>/models--<org>--<name>/refs/<revision> holds a
commit hash, <cache>/models--<org>--<name>/snapshots/<hash>/ the files. The cache folder is, as
in huggingface_hub: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. `refs/main` names the snapshot (an `org/name@rev` id picks another ref
or a commit); without refs, the only snapshot, else the most recently modified one. Nothing is
downloaded: when the id is not cached, ModelNotFound says which command downloads it.
Pure Python (no torch): commands check --model before loading anything.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

# org/name: what the Hub allows (letters, digits, '-', '_', '.'), optional @revision
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")


class ModelNotFound(FileNotFoundError):
    """--model is neither a folder nor a cached Hub id; the message says what to do."""


def hf_hub_cache(environ=None) -> Path:
    env = os.environ if environ is None else environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path(env.get("HOME") or Path.home()).expanduser() / ".cache" / "huggingface" / "hub"


def looks_like_hub_id(name: str) -> bool:
    """'Qwen/Qwen2.5-0.5B-Instruct' yes; './ckpt', '/abs/path', 'a/b/c', 'ckpt' no."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def cached_snapshot(repo_id: str, environ=None) -> Path | None:
    """The snapshot folder of a cached Hub model, or None."""
    repo_id, _, revision = repo_id.partition("@")
    revision = revision or "main"
    repo = hf_hub_cache(environ) / ("models--" + repo_id.replace("/", "--"))
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return snaps / commit if (snaps / commit).is_dir() else None
    if (snaps / revision).is_dir():            # a commit hash given as @revision
        return snaps / revision
    if revision != "main":
        return None
    found = [p for p in snaps.iterdir() if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def download_hint(repo_id: str) -> str:
    repo, _, rev = repo_id.partition("@")
    return f"huggingface-cli download {repo}" + (f" --revision {rev}" if rev else "")


def resolve_model_path(name: str | os.PathLike, what: str = "--model", environ=None) -> str:
    """A local folder as is; a Hub id -> its cached snapshot folder; else ModelNotFound whose
    message names `what` (the flag) and, for a Hub id, the download command."""
    name = os.fspath(name)
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise ModelNotFound(f"{what} {name}: not a folder (expected an HF-format checkpoint folder "
                            f"with config.json, or a Hugging Face Hub id)")
    if looks_like_hub_id(name):
        snap = cached_snapshot(name, environ)
        if snap is not None:
            return str(snap)
        raise ModelNotFound(
            f"{what} {name}: no such folder, and not in the local Hugging Face cache "
            f"({hf_hub_cache(environ)}). Download it first:  {download_hint(name)}  "
            f"(or pass a local checkpoint folder; HF_HUB_CACHE / HF_HOME choose the cache)")
    raise ModelNotFound(f"{what} {name}: no such folder (expected an HF-format checkpoint folder "
                        f"or a Hugging Face Hub id such as Qwen/Qwen2.5-0.5B-Instruct)")
