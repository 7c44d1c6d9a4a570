"""Traces stage: thinking_trajectories + attempt for every question.

Two ways, combined: import from a file/dataset with s1K columns (matched by question id), and
generate the rest with a teacher checkpoint through our engine (s1.infer.LLM), budget-forcing
settings passed through as SamplingParams fields. Teacher outputs are cached per question id in
<out>/cache/traces_<teacher key>.jsonl, so a stopped run continues where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

from s1.curate.store import derive_seed, lazy_engine, run_cached, sampling_params
from s1.curate.text import question_id
from s1.common.jsonl import read_jsonl

THINK_KEYS = ("thinking_trajectories", "deepseek_thinking_trajectory", "thinking")
ATTEMPT_KEYS = ("attempt", "deepseek_attempt")
# `--traces pool-solutions`: a model-free run; the pool's own reference solutions stand in for
# teacher traces (the selection then reflects solution lengths, not a teacher's reasoning).
SOLUTION_TRACES = "pool-solutions"


def solution_traces(records: list[dict]) -> dict[str, dict]:
    """id -> {thinking, attempt} built from each record's reference solution and answer (what
    bench/curate.py's model-free benchmark imports)."""
    out = {}
    for r in records:
        answer = r.get("answer") or ""
        out[r["id"]] = {"thinking": r.get("solution") or f"The answer is {answer}.",
                        "attempt": f"\\boxed{{{answer}}}"}
    return out


def _rows_of(spec: str) -> list[dict]:
    p = Path(spec)
    if spec.startswith("hf:"):
        from s1.common.hub import load_hub_dataset

        name, _, split = spec[3:].partition(":")
        return list(load_hub_dataset(name, split=split or "train"))
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(spec)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        return list(ds)
    if not p.exists():
        raise FileNotFoundError(f"traces file {spec} does not exist")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    if p.suffix == ".json":
        return json.loads(p.read_text(encoding="utf-8"))
    if p.suffix == ".jsonl":
        return read_jsonl(p)
    raise ValueError(f"unsupported traces file {spec} (expected .jsonl, .json, .parquet, a save_to_disk folder or hf:NAME)")


def load_trace_file(spec: str) -> dict[str, dict]:
    """id -> {thinking, attempt} from rows with s1K columns: question + thinking_trajectories
    (list of one string, or a string) | deepseek_thinking_trajectory + attempt | deepseek_attempt."""
    out = {}
    for i, row in enumerate(_rows_of(spec), 1):
        q = row.get("question")
        tk = next((k for k in THINK_KEYS if row.get(k) is not None), None)
        ak = next((k for k in ATTEMPT_KEYS if row.get(k) is not None), None)
        if not isinstance(q, str) or tk is None or ak is None:
            raise ValueError(f"{spec}: row {i} lacks question / {'|'.join(THINK_KEYS)} / {'|'.join(ATTEMPT_KEYS)}")
        t = row[tk]
        t = "\n".join(t).strip() if isinstance(t, list) else str(t)
        out[question_id(q)] = {"thinking": t, "attempt": str(row[ak])}
    return out


def teacher_rows(llm, questions: dict[str, str], params: dict, seed: int):
    """compute_batch for run_cached: one engine call for a batch of question ids. llm: an engine
    or a zero-argument factory (loaded on the first uncached batch)."""
    engine = lazy_engine(llm)

    def compute(ids: list[str]) -> list[dict]:
        sps = [sampling_params(**{**params, "seed": derive_seed(seed, i)}) for i in ids]
        outs = engine().generate([questions[i] for i in ids], sps, use_tqdm=False)
        rows = []
        for i, o in zip(ids, outs):
            err = getattr(o, "error", None)
            if err is None and o.finish_reason not in ("stop", "length"):
                err = f"finish_reason={o.finish_reason}"
            rows.append({"id": i, "thinking": o.thinking or "", "attempt": o.answer or "", "error": err,
                         "num_thinking_tokens": getattr(o, "num_thinking_tokens", None),
                         "num_waits_used": getattr(o, "num_waits_used", None)})
        return rows
    return compute


def add_traces(records: list[dict], imported: dict[str, dict] | None, llm, params: dict, seed: int,
               cache_path, batch_size: int = 64, progress: bool = True) -> tuple[list[dict], dict]:
    """Attach thinking / attempt / trace_error / trace_origin to every record (new dicts)."""
    imported = imported or {}
    out, need = [], []
    for r in records:
        if r["id"] not in imported:
            need.append(r["id"])
    gen = {}
    if need and llm is not None:
        questions = {r["id"]: r["question"] for r in records}
        gen = run_cached(need, cache_path, teacher_rows(llm, questions, params, seed), batch_size,
                         desc="traces (teacher)", progress=progress)
    counts = {"imported": 0, "teacher": 0, "missing": 0, "errored": 0}
    for r in records:
        r = dict(r)
        if r["id"] in imported:
            t = imported[r["id"]]
            r.update(thinking=t["thinking"], attempt=t["attempt"], trace_error=None, trace_origin="import")
            counts["imported"] += 1
        elif r["id"] in gen:
            g = gen[r["id"]]
            r.update(thinking=g["thinking"], attempt=g["attempt"], trace_error=g.get("error"), trace_origin="teacher")
            counts["teacher"] += 1
            counts["errored"] += g.get("error") is not None
        else:
            r.update(thinking=None, attempt=None, trace_error="no trace (no teacher and not in the traces file)",
                     trace_origin=None)
            counts["missing"] += 1
        out.append(r)
    return out, counts
