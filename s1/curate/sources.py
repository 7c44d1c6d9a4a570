"""Load question pools and normalize them to the s1 schema.

Every pool row becomes a record dict:
    id (hash of the normalized question, text.question_id), question, solution, answer,
    cot_type ("math"), source_type (pool folder / dataset name), metadata (dict of the row's
    other fields).
Adding a source = one reader (file format) + one small row->record function below, and one line
in POOL_SOURCES. Malformed rows never crash a run: they become SourceError(source, path, line,
reason) entries that the stage reports.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from s1.curate.text import last_boxed, question_id


@dataclass
class SourceError:
    source: str
    path: str
    line: int          # 1-based line where the row starts in the file (0: whole file)
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}:{self.line}: {self.reason}"


class Malformed(ValueError):
    """Raised by a row function for a row that cannot be used (reported, then skipped)."""


def make_record(question, answer, solution, source_type: str, metadata: dict, cot_type: str = "math") -> dict:
    if not isinstance(question, str) or not question.strip():
        raise Malformed("missing or empty question")
    answer = "" if answer is None else str(answer).strip()
    solution = "" if solution is None else str(solution)
    return {"id": question_id(question), "question": question.strip(), "solution": solution,
            "answer": answer, "cot_type": cot_type, "source_type": source_type, "metadata": metadata}


# ---------------------------------------------------------------- readers: (line, row | error)
def read_jsonl(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, Malformed(f"invalid JSON ({e.msg})")
                continue
            yield lineno, row if isinstance(row, dict) else Malformed(f"expected a JSON object, got {type(row).__name__}")


def read_json_list(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    """A JSON array of objects; each element's line is found by decoding element by element."""
    text = Path(path).read_text(encoding="utf-8")
    dec = json.JSONDecoder()
    pos, n = 0, len(text)

    def skip_ws(p):
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip_ws(pos)
    if pos >= n or text[pos] != "[":
        yield 1, Malformed("expected a JSON list of objects")
        return
    pos = skip_ws(pos + 1)
    line, counted = 1, 0       # incremental line counting: line of text[pos]
    while pos < n and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            row, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield e.lineno, Malformed(f"invalid JSON ({e.msg}); rest of file skipped")
            return
        yield line, row if isinstance(row, dict) else Malformed(f"expected a JSON object, got {type(row).__name__}")
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
    if pos >= n:
        yield line, Malformed("unterminated JSON list")


def read_csv(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        start = reader.line_num + 1
        for values in reader:
            if len(values) != len(header):
                yield start, Malformed(f"{len(values)} fields, header has {len(header)}")
            elif any(values):
                yield start, dict(zip(header, values))
            start = reader.line_num + 1


def read_any(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return read_json_list(path)
    if suffix == ".csv":
        return read_csv(path)
    raise ValueError(f"unsupported pool file {path} (expected .jsonl, .json or .csv)")


# ---------------------------------------------------------------- row -> record, one per source
def _get(row: dict, key: str):
    if key not in row:
        raise Malformed(f"missing field {key!r}")
    return row[key]


def row_aime(row: dict, source: str, max_year: int | None = 2022) -> dict | None:
    """AIME_Dataset_1983_2024.csv: ID, Year, Problem Number, Question, Answer, Part.
    s1 keeps Year <= 2022 (AIME 2024 is an evaluation set); returns None for later years."""
    try:
        year = int(_get(row, "Year"))
    except ValueError:
        raise Malformed(f"Year {row.get('Year')!r} is not an integer")
    if max_year is not None and year > max_year:
        return None
    meta = {"id": row.get("ID"), "year": year, "problem_number": row.get("Problem Number"), "part": row.get("Part") or None}
    return make_record(_get(row, "Question"), _get(row, "Answer"), "", source, meta)


def row_omni(row: dict, source: str) -> dict:
    """omni_math_rule.jsonl: domain (list), difficulty, problem, solution, answer, source."""
    meta = {"domain": row.get("domain"), "difficulty": row.get("difficulty"), "source": row.get("source")}
    return make_record(_get(row, "problem"), _get(row, "answer"), row.get("solution"), source, meta)


def _strip_dollars(s: str) -> str:
    s = s.strip()
    return s[1:-1].strip() if len(s) >= 2 and s[0] == "$" and s[-1] == "$" else s


def row_olympiadbench(row: dict, source: str) -> dict:
    """OlympiadBench: question (+ optional context), solution (list), final_answer (list), subfield."""
    q = _get(row, "question")
    if row.get("context"):
        q = f"{row['context']}\n\n{q}"
    answers = _get(row, "final_answer")
    answers = answers if isinstance(answers, list) else [answers]
    sol = row.get("solution") or []
    sol = "\n\n".join(sol) if isinstance(sol, list) else sol
    meta = {k: row.get(k) for k in ("id", "subfield", "answer_type", "unit", "is_multiple_answer")}
    return make_record(q, ", ".join(_strip_dollars(str(a)) for a in answers), sol, source, meta)


def row_math_test(row: dict, source: str) -> dict:
    """MATH test: problem, level, type, solution, idx; the answer is the last \\boxed{} of solution."""
    sol = _get(row, "solution")
    meta = {"level": row.get("level"), "type": row.get("type"), "idx": row.get("idx")}
    return make_record(_get(row, "problem"), last_boxed(sol or ""), sol, source, meta)


def row_math_train(row: dict, source: str) -> dict:
    """MATH train (deepscaler): problem, answer, difficulty, type; no solution text."""
    meta = {"type": row.get("type"), "difficulty": row.get("difficulty")}
    return make_record(_get(row, "problem"), _get(row, "answer"), row.get("solution"), source, meta)


_Q_KEYS = ("question", "problem", "Question", "Problem")
_A_KEYS = ("answer", "final_answer", "Answer", "Correct Answer")
_S_KEYS = ("solution", "Solution")


def row_generic(row: dict, source: str) -> dict:
    """Any other table: first present of question/problem, answer/final_answer, solution."""
    q = next((row[k] for k in _Q_KEYS if k in row), None)
    if q is None:
        raise Malformed(f"no question field (looked for {', '.join(_Q_KEYS)})")
    a = next((row[k] for k in _A_KEYS if k in row and row[k] is not None), None)
    if isinstance(a, list):
        a = ", ".join(map(str, a))
    s = next((row[k] for k in _S_KEYS if k in row and row[k] is not None), "")
    if isinstance(s, list):
        s = "\n\n".join(map(str, s))
    if a is None and isinstance(s, str):
        a = last_boxed(s)
    used = set(_Q_KEYS) | set(_A_KEYS) | set(_S_KEYS)
    meta = {k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool, list, type(None)))}
    return make_record(q, a, s, source, meta, cot_type=row.get("cot_type") or "math")


# folder name in ../shared/data/pool -> row function
POOL_SOURCES: dict[str, Callable] = {
    "aime_1983_2024": row_aime,
    "omni_math_rule": row_omni,
    "olympiadbench": row_olympiadbench,
    "math_test": row_math_test,
    "math_train": row_math_train,
}


def _pool_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".csv"))
    if not files:
        raise FileNotFoundError(f"no .jsonl/.json/.csv file in pool folder {folder}")
    return files


def iter_source(spec: str, aime_max_year: int | None = 2022):
    """Yield (source_name, path, line, record | None | Exception) for one pool spec.

    spec: a pool folder (its name picks the row function, unknown names use row_generic),
    a single file, or `hf:NAME[:SPLIT]` / a `save_to_disk` folder for a `datasets` dataset.
    """
    if spec.startswith("hf:") or (os.path.isdir(spec) and os.path.exists(os.path.join(spec, "dataset_info.json"))
                                   or os.path.isdir(spec) and os.path.exists(os.path.join(spec, "dataset_dict.json"))):
        yield from _iter_hf(spec)
        return
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"pool source {spec} does not exist")
    if path.is_dir() and not any(p.is_file() and p.suffix.lower() in (".jsonl", ".json", ".csv") for p in path.iterdir()):
        # a pool root such as ../shared/data/pool: every sub-folder is one source
        subs = sorted(p for p in path.iterdir() if p.is_dir())
        if not subs:
            raise FileNotFoundError(f"pool folder {spec} has no data files and no source folders")
        for sub in subs:
            yield from iter_source(str(sub), aime_max_year)
        return
    name = path.name if path.is_dir() else path.stem
    fn = POOL_SOURCES.get(name if path.is_dir() else path.parent.name, row_generic)
    if path.is_file() and fn is not row_generic:
        name = path.parent.name
    files = _pool_files(path) if path.is_dir() else [path]
    for f in files:
        for line, row in read_any(f):
            if isinstance(row, Exception):
                yield name, str(f), line, row
                continue
            try:
                rec = fn(row, name, aime_max_year) if fn is row_aime else fn(row, name)
            except Malformed as e:
                rec = e
            except (TypeError, AttributeError, ValueError) as e:   # wrong field types
                rec = Malformed(f"{type(e).__name__}: {e}")
            yield name, str(f), line, rec


def _iter_hf(spec: str):
    import datasets  # lazy: only hub / on-disk datasets need it

    if spec.startswith("hf:"):
        from s1.common.hub import load_hub_dataset

        name, _, split = spec[3:].partition(":")
        ds = load_hub_dataset(name, split=split or "train")
    else:
        name, split = Path(spec).name, None
        ds = datasets.load_from_disk(spec)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    for i, row in enumerate(ds):
        try:
            rec = row_generic(row, name)
        except Malformed as e:
            rec = e
        yield name, spec, i + 1, rec   # "line" = 1-based row index


def load_sources(specs: list[str], aime_max_year: int | None = 2022, progress: bool = True) -> tuple[list[dict], dict]:
    """Load and normalize every pool spec. Returns (records, stats) with per-source counts
    (rows, kept, filtered, malformed) and the list of SourceError dicts."""
    from tqdm import tqdm

    records, per_source, errors = [], {}, []
    bar = tqdm(desc="sources", unit="row", disable=not progress)
    for spec in specs:
        for name, path, line, rec in iter_source(spec, aime_max_year):
            c = per_source.setdefault(name, {"rows": 0, "kept": 0, "filtered": 0, "malformed": 0})
            c["rows"] += 1
            bar.update(1)
            if isinstance(rec, Exception):
                c["malformed"] += 1
                errors.append(asdict(SourceError(name, path, line, str(rec))))
            elif rec is None:
                c["filtered"] += 1
            else:
                c["kept"] += 1
                records.append(rec)
    bar.close()
    return records, {"per_source": per_source, "errors": errors, "kept": len(records)}
