"""`--model` as a local folder or a Hugging Face Hub id already in the local HF cache.

    resolve_model_path("ckpt/s1-32B")              -> "ckpt/s1-32B"            (a folder: as is)
    resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")
        -> "~/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/<rev>"

The cache layout is huggingface_hub's: <cache>/models--<org>--<name>/refs/<revision> holds a
commit hash, <cache>/models--<org>--<name>/snapshots/<hash>/ the files. The cache folder is, as
in huggingface_hub: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. `refs/main` names the snapshot (an `org/name@rev` id picks another ref
or a commit); without refs, the only snapshot, else the most recently modified one. Nothing is
downloaded: when the id is not cached, ModelNotFound says which command downloads it
(`hf download ORG/NAME`: huggingface_hub's CLI; 1.x has no `huggingface-cli`).

Datasets (`load_hub_dataset`): a Hub dataset name goes through `datasets.load_dataset`, which
downloads on first use and caches. Without a connection it would retry for ~25 s before failing
even when the answer is "not cached", so the Hub's reachability is checked first (HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE set, or no TCP connection to the Hub, or to the HTTPS proxy, within 2 s): then
the load runs in datasets' offline mode (a cached dataset loads at once) and an uncached one fails
at once with DatasetUnavailable, whose message names the command that fetches it.
Pure Python (no torch): commands check --model before loading anything.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

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
    return f"hf download {repo}" + (f" --revision {rev}" if rev else "")


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


# ----------------------------------------------------------------------------- datasets
class DatasetUnavailable(FileNotFoundError):
    """A Hub dataset that is neither in the local cache nor reachable; the message says what to do."""


_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline(environ=None) -> bool:
    """Offline mode asked for: HF_HUB_OFFLINE, HF_DATASETS_OFFLINE (or TRANSFORMERS_OFFLINE) true."""
    env = os.environ if environ is None else environ
    return any((env.get(v) or "").strip().upper() in _TRUE
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_address(environ=None) -> tuple[str, int]:
    """(host, port) a Hub request connects to first: the HTTPS proxy when one is set, else the
    endpoint ($HF_ENDPOINT, default https://huggingface.co)."""
    env = os.environ if environ is None else environ
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if env.get(var):
            u = urlsplit(env[var] if "://" in env[var] else "http://" + env[var])
            return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    u = urlsplit(env.get("HF_ENDPOINT") or "https://huggingface.co")
    return u.hostname or "", u.port or (80 if u.scheme == "http" else 443)


def hub_reachable(timeout: float = 2.0, environ=None) -> bool:
    """Whether a TCP connection to `hub_address()` opens within `timeout` seconds (name lookup
    included: it runs on a thread, since getaddrinfo has no timeout of its own)."""
    host, port = hub_address(environ)
    if not host:
        return False
    ok = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, name="s1-hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


@contextlib.contextmanager
def datasets_offline():
    """datasets (and huggingface_hub) in offline mode for the duration: cached datasets load,
    anything else fails at once instead of retrying the network."""
    import datasets.config
    import huggingface_hub.constants as hub_constants
    saved = [(m, getattr(m, "HF_HUB_OFFLINE")) for m in (datasets.config, hub_constants)
             if hasattr(m, "HF_HUB_OFFLINE")]
    for m, _ in saved:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, v in saved:
            m.HF_HUB_OFFLINE = v


def dataset_download_hint(name: str) -> str:
    return f"hf download --repo-type dataset {name} --local-dir DIR"


def load_hub_dataset(name: str, config: str | None = None, split: str | None = None, *,
                     hint: str = "", environ=None):
    """datasets.load_dataset(name, config, split=split), failing fast when the Hub is out of
    reach: DatasetUnavailable if the dataset is not in the local cache then, its message naming
    the fetch command (`hint`: the dataset's own instructions instead of the generic ones). Other
    errors (a gated dataset without a login, a wrong name) pass through as datasets raises them."""
    import datasets
    args = (name, config) if config else (name,)
    kw = {"split": split} if split else {}
    why = ("offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if hub_offline(environ) else None)
    if why is None and not hub_reachable(environ=environ):
        host, port = hub_address(environ)
        why = f"no connection to {host}:{port} within 2 s"
    if why is None:
        return datasets.load_dataset(*args, **kw)
    try:
        with datasets_offline():
            return datasets.load_dataset(*args, **kw)
    except Exception as e:
        what = f"{name!r}" + (f" (config {config!r})" if config else "")
        todo = hint or (f"Where the Hub is reachable, run the command once (it fills the cache), or fetch "
                        f"the files with  {dataset_download_hint(name)}  and pass a local file.")
        raise DatasetUnavailable(f"hub dataset {what} is not in the local datasets cache and the Hugging Face "
                                 f"Hub is out of reach ({why}; {type(e).__name__}). {todo}") from None
