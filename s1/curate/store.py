"""On-disk state: JSONL record files and append-only per-question caches.

Caches are appended one batch at a time and flushed, so an interrupted model stage loses at most
the batch in flight; a truncated last line (killed mid-write) is ignored on reload.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from s1.common.jsonl import dumps, read_jsonl


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a previous run killed mid-line leaves a partial tail: start on a fresh line
    needs_nl = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if needs_nl:
            f.write("\n")
        for r in rows:
            f.write(dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_cache(path: str | os.PathLike) -> dict[str, dict]:
    """id -> cached row (last write wins)."""
    if not Path(path).exists():
        return {}
    return {r["id"]: r for r in read_jsonl(path, tolerate_truncated_tail=True) if "id" in r}


def derive_seed(seed: int, key: str) -> int:
    """Per-question sampling seed: independent of batch composition and of interruptions."""
    return int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16)


def fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_cached(ids: list[str], cache_path, compute_batch, batch_size: int = 64, desc: str = "", progress: bool = True) -> dict[str, dict]:
    """Compute rows for ids missing from the cache, batch by batch, appending each batch.

    compute_batch(list[id]) -> list[dict] (one row per id, each with "id"). Returns id -> row
    for every id. Order of computation = order of ids, so results never depend on where a
    previous run stopped (each row depends only on its own question and seed).
    """
    from tqdm import tqdm

    cache = load_cache(cache_path) if cache_path is not None else {}   # None: no on-disk cache
    todo = [i for i in dict.fromkeys(ids) if i not in cache]
    bar = tqdm(total=len(set(ids)), initial=len(set(ids)) - len(todo), desc=desc, unit="q", disable=not progress)
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        rows = compute_batch(chunk)
        if len(rows) != len(chunk):
            raise RuntimeError(f"{desc}: got {len(rows)} results for {len(chunk)} questions")
        if cache_path is not None:
            append_jsonl(cache_path, rows)
        for r in rows:
            cache[r["id"]] = r
        bar.update(len(chunk))
    bar.close()
    return {i: cache[i] for i in ids}


def lazy_engine(llm):
    """() -> engine. `llm` is an engine (has .generate) or a zero-argument factory, called once, on
    first use: a model whose rows are all cached is never loaded."""
    box = [llm if hasattr(llm, "generate") else None]

    def get():
        if box[0] is None:
            box[0] = llm()
        return box[0]
    return get


def sampling_params(**kw):
    """s1.infer.SamplingParams(**kw), imported on first use (the sampling module is pure Python)."""
    from s1.infer import SamplingParams
    return SamplingParams(**kw)
