"""Evaluation tasks of the s1 paper: AIME24/25, MATH-500, AMC23 and GPQA Diamond as a list of
`TaskItem(id, question, answer, kind)`.

Sources, in order of precedence:
1. `data_file=`: one local file (jsonl, json list, or csv) in the task's schema.
2. `hub=`: a Hugging Face `datasets` name (e.g. "HuggingFaceH4/MATH-500"; gpqa_diamond defaults
   to the gated "Idavidrein/gpqa", config "gpqa_diamond").
3. `data_dir=`: `<data_dir>/<task>/test.jsonl` (the layout of ../shared/data/eval). Default:
   $S1_EVAL_DATA, else $S1_SHARED_DATA/eval, else ../shared/data/eval beside the repository.

The question text is the bare problem (the engine adds the s1 chat template and thinking start).
Answer kinds: AIME -> "integer" (compared as integers, "025" == 25); MATH-500 and AMC23 ->
"math" (AMC answers are floats in the file: written as integers when integral, then graded
numerically); GPQA -> "choice" (the letter of the correct option after a seeded shuffle).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import random

from s1.common.paths import eval_data_dir
from s1.common.jsonl import JsonlError, read_jsonl

TASKS = {
    # name: (answer kind, default hub dataset or None)
    "aime24": ("integer", None),
    "aime24_qwen": ("integer", None),
    "aime25": ("integer", None),
    "math500": ("math", None),
    "amc23": ("math", None),
    "gpqa_diamond": ("choice", "Idavidrein/gpqa"),
}
GPQA_CONFIG = "gpqa_diamond"
CHOICE_LETTERS = "ABCD"


class TaskError(RuntimeError):
    """A task could not be loaded (unknown name, missing file, bad schema, gated dataset)."""


@dataclasses.dataclass(frozen=True)
class TaskItem:
    id: str
    question: str  # bare question text as shown to the model
    answer: str  # reference answer (letter for choice tasks)
    kind: str  # "integer" | "math" | "choice"


def default_data_dir() -> pathlib.Path:
    """$S1_EVAL_DATA, else $S1_SHARED_DATA/eval, else ../shared/data/eval (s1/common/paths.py)."""
    return eval_data_dir()


def _read_rows(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        raise TaskError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        try:
            return read_jsonl(path)
        except JsonlError as e:
            raise TaskError(str(e)) from None
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise TaskError(f"{path}: expected a JSON list of rows")
        return data
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    raise TaskError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json or .csv)")


def _first(row: dict, keys: tuple[str, ...], what: str, where: str):
    for k in keys:
        if k in row and row[k] is not None and str(row[k]).strip() != "":
            return row[k]
    raise TaskError(f"{where}: row has no {what} field (looked for {', '.join(keys)}; has {sorted(row)})")


def _answer_str(value) -> str:
    """AMC answers are floats (27.0): write integral values as integers."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def _math_items(rows: list[dict], kind: str, where: str) -> list[TaskItem]:
    items = []
    for i, row in enumerate(rows):
        q = _first(row, ("problem", "question", "Question"), "question", f"{where} row {i}")
        a = _first(row, ("answer", "Answer", "final_answer"), "answer", f"{where} row {i}")
        if isinstance(a, list):  # some hub sets store a list of acceptable answers; take the first
            a = a[0]
        rid = row.get("unique_id", row.get("id", row.get("ID", i)))
        items.append(TaskItem(id=str(rid), question=str(q).strip(), answer=_answer_str(a), kind=kind))
    return items


def gpqa_item(row: dict, index: int, seed: int, where: str = "gpqa") -> TaskItem:
    """One GPQA row (Question, Correct Answer, Incorrect Answer 1-3) -> a 4-option question.

    The options are shuffled with a per-question RNG seeded by (seed, question id), so the order of
    a question does not depend on which other questions are loaded (--limit) and is reproducible.
    Shown as in s1's lm-eval task: the question, a blank line, then "A) ..." lines.
    """
    q = str(_first(row, ("Question",), "Question", f"{where} row {index}")).strip()
    correct = str(_first(row, ("Correct Answer",), "Correct Answer", f"{where} row {index}")).strip()
    wrong = [str(_first(row, (f"Incorrect Answer {k}",), f"Incorrect Answer {k}", f"{where} row {index}")).strip()
             for k in (1, 2, 3)]
    rid = str(row.get("Record ID") or row.get("id") or index)
    digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    options = [correct] + wrong
    order = list(range(4))
    rng.shuffle(order)
    shown = [options[j] for j in order]
    letter = CHOICE_LETTERS[order.index(0)]
    text = q + "\n\n" + "\n".join(f"{CHOICE_LETTERS[k]}) {shown[k]}" for k in range(4))
    return TaskItem(id=rid, question=text, answer=letter, kind="choice")


def choice_options(question: str) -> list[str]:
    """Option texts of a rendered multiple-choice question (its trailing "A) ..." lines)."""
    opts = {}
    for line in question.splitlines():
        if len(line) >= 3 and line[0] in CHOICE_LETTERS and line[1:3] == ") ":
            opts[line[0]] = line[3:]
    return [opts[k] for k in CHOICE_LETTERS if k in opts]


GPQA_HINT = ("GPQA is gated: accept its terms on huggingface.co/datasets/Idavidrein/gpqa, log in "
             "(`hf auth login`, or set HF_TOKEN), then either run online once or fetch the file with  "
             "hf download --repo-type dataset Idavidrein/gpqa gpqa_diamond.csv --local-dir data/gpqa  "
             "and pass --data-file data/gpqa/gpqa_diamond.csv.")


def _load_hub(name: str, config: str | None, split: str | None) -> list[dict]:
    from s1.common.hub import DatasetUnavailable, load_hub_dataset
    hint = GPQA_HINT if name == "Idavidrein/gpqa" else ""
    try:
        ds = load_hub_dataset(name, config, hint=hint)
    except DatasetUnavailable as e:
        raise TaskError(str(e)) from None
    except Exception as e:
        raise TaskError(f"could not load hub dataset {name!r} (config {config!r}): {type(e).__name__}: {e}."
                        + (" " + hint if hint else "")) from None
    if split is None:
        split = "test" if "test" in ds else ("train" if "train" in ds else next(iter(ds)))
    if split not in ds:
        raise TaskError(f"hub dataset {name!r} has no split {split!r} (has {list(ds)})")
    return [dict(r) for r in ds[split]]


def load_task(name: str, data_dir: str | os.PathLike | None = None, data_file: str | os.PathLike | None = None,
              hub: str | None = None, split: str | None = None, limit: int | None = None,
              seed: int = 0) -> list[TaskItem]:
    """Items of task `name` (see module docstring for sources). `limit` keeps the first N items."""
    if name == "gpqa":
        name = "gpqa_diamond"
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise TaskError(f"--limit must be >= 1, got {limit}")
    kind, default_hub = TASKS[name]
    if data_file is not None:
        where = str(data_file)
        rows = _read_rows(pathlib.Path(data_file))
    elif hub is not None or (kind == "choice"):
        hub = hub or default_hub
        where = hub
        rows = _load_hub(hub, GPQA_CONFIG if hub == "Idavidrein/gpqa" else None, split)
    else:
        path = pathlib.Path(data_dir if data_dir is not None else default_data_dir()) / name / "test.jsonl"
        where = str(path)
        if not path.exists():
            raise TaskError(f"no data for task {name!r}: {path} does not exist (pass --data-dir, --data-file or --hub)")
        rows = _read_rows(path)
    if not rows:
        raise TaskError(f"{where}: no rows")
    if limit is not None:
        rows = rows[:limit]
    if kind == "choice":
        items = [gpqa_item(r, i, seed, where) for i, r in enumerate(rows)]
    else:
        items = _math_items(rows, kind, where)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise TaskError(f"{where}: duplicate question ids")
    return items
