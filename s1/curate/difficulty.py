"""Difficulty stage (s1 §2.1, step 3).

1. Students: each student checkpoint attempts every question through our engine; the offline
   grader (s1.evaluation.grader) compares the extracted answer with the reference answer. A question is
   kept only if EVERY student gets it wrong (s1: Qwen2.5-7B and -32B-Instruct). Attempts are
   cached per (student, question id) in <out>/cache/student_<key>.jsonl.
2. Trace length: tokens of the thinking trajectory under the Qwen2.5 tokenizer, recorded as
   `trace_tokens` (the selection stage ranks by it).
Without students step 1 is skipped (every question kept) and the report says so.
"""
from __future__ import annotations

from pathlib import Path

from s1.curate.store import derive_seed, lazy_engine, run_cached, sampling_params


def count_tokens(texts: list[str], tokenizer_dir, batch: int = 1024, progress: bool = False) -> list[int]:
    """Qwen2.5 token counts via the `tokenizers` fast tokenizer (batch encode, no special tokens)."""
    from tokenizers import Tokenizer
    from tqdm import tqdm

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {tokenizer_dir} (pass --tokenizer DIR)")
    tok = Tokenizer.from_file(str(path))
    out = []
    bar = tqdm(total=len(texts), desc="difficulty (trace tokens)", unit="q", disable=not progress)
    for i in range(0, len(texts), batch):
        out += [len(e.ids) for e in tok.encode_batch(texts[i:i + batch], add_special_tokens=False)]
        bar.update(len(texts[i:i + batch]))
    bar.close()
    return out


def grade_kind(rec: dict) -> str:
    return "integer" if rec.get("source_type", "").lower().startswith("aime") else "math"


def student_rows(llm, records: dict[str, dict], params: dict, seed: int):
    """llm: an engine, or a zero-argument factory called on the first batch that needs it."""
    from s1.evaluation.grader import extract_answer, grade

    engine = lazy_engine(llm)

    def compute(ids):
        sps = [sampling_params(**{**params, "seed": derive_seed(seed, i)}) for i in ids]
        outs = engine().generate([records[i]["question"] for i in ids], sps, use_tqdm=False)
        rows = []
        for i, o in zip(ids, outs):
            rec = records[i]
            kind = grade_kind(rec)
            pred = extract_answer(o.answer or "", kind)
            if pred is None:
                pred = extract_answer(o.text or "", kind)
            ok = pred is not None and bool(rec["answer"]) and grade(pred, rec["answer"], kind=kind)
            rows.append({"id": i, "attempt": o.answer or "", "pred": pred, "correct": bool(ok)})
        return rows
    return compute


def difficulty_filter(records: list[dict], students: list[tuple[str, object]], params: dict, seed: int,
                      cache_dir, tokenizer_dir, batch_size: int = 64, progress: bool = True):
    """students: [(key, llm or zero-argument llm factory)]. Returns (kept records with `students`
    and `trace_tokens`, stats)."""
    by_id = {r["id"]: r for r in records}
    results = {}
    for key, llm in students:
        results[key] = run_cached(list(by_id), Path(cache_dir) / f"student_{key}.jsonl",
                                  student_rows(llm, by_id, params, seed), batch_size,
                                  desc=f"difficulty ({key})", progress=progress)
    lengths = count_tokens([r.get("thinking") or "" for r in records], tokenizer_dir, progress=progress)
    kept = []
    per_source: dict[str, dict] = {}
    per_student = {k: 0 for k in results}
    for r, n in zip(records, lengths):
        c = per_source.setdefault(r["source_type"], {"in": 0, "solved_by_a_student": 0, "kept": 0})
        c["in"] += 1
        r = dict(r, trace_tokens=n, students={k: results[k][r["id"]]["correct"] for k in results})
        for k, ok in r["students"].items():
            per_student[k] += ok
        if any(r["students"].values()):
            c["solved_by_a_student"] += 1
            continue
        c["kept"] += 1
        kept.append(r)
    stats = {"students": list(results), "correct_per_student": per_student, "per_source": per_source,
             "kept": len(kept), "skipped": not students,
             "trace_tokens": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                              "mean": round(sum(lengths) / max(len(lengths), 1), 1)}}
    return kept, stats
