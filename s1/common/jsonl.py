"""JSON Lines files: one JSON object per line, UTF-8. The project's one reader and writers.

- `read_jsonl(path)`: every object, in order; a bad line raises `JsonlError("path:line: why")`
  (blank lines are skipped). `tolerate_truncated_tail=True` drops a partial LAST line, the trace
  a killed writer leaves (appending runs resume from what was complete).
- `iter_jsonl(path)`: the same, lazily, as (line number, object) pairs.
- `write_jsonl(path, rows)`: atomic (temporary file + rename): the file is complete or absent.
- `JsonlAppender(path)`: appends one object per call and flushes it, so an interrupted run keeps
  every line written before the interruption.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator


class JsonlError(ValueError):
    """A JSONL file is unreadable: the message names the file and line."""


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False,
               objects_only: bool = True) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_truncated_tail and i == last:
                return   # the partial last line of an interrupted append
            raise JsonlError(f"{path}:{i + 1}: invalid JSON ({e.msg})") from None
        if objects_only and not isinstance(row, dict):
            raise JsonlError(f"{path}:{i + 1}: expected a JSON object, got {type(row).__name__}")
        yield i + 1, row


def read_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> list[dict]:
    return [row for _, row in iter_jsonl(path, tolerate_truncated_tail=tolerate_truncated_tail)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class JsonlAppender:
    """Append objects to a JSONL file, one flushed line per `write` (a context manager).
    A partial last line left by a killed writer is cut off first, so appending resumes cleanly."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path, "rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.f.write(dumps(row) + "\n")
        self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
