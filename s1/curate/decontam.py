"""Decontamination against evaluation sets, then exact deduplication (s1 §2.1, step 1).

Decontamination: lowercase, collapse whitespace, split on spaces; a pool question that shares any
word 8-gram with any evaluation question is removed. Deduplication: records with the same id
(= same normalized question text) keep only the first occurrence (pool order).
"""
from __future__ import annotations

import json
from pathlib import Path

from s1.curate.text import word_ngrams
from s1.common.jsonl import read_jsonl

# the evaluation sets of ../shared/data/eval; the question field of each row
_EVAL_TEXT_KEYS = ("problem", "question", "Question")


def load_eval_questions(paths: list[str]) -> dict[str, list[str]]:
    """{set name: [question text]} from eval folders (any *.jsonl inside), .jsonl/.json files,
    or `hf:NAME[:SPLIT]` datasets (e.g. hf:Idavidrein/gpqa:train for GPQA, field Question)."""
    out: dict[str, list[str]] = {}
    for spec in paths:
        if spec.startswith("hf:"):
            from s1.common.hub import load_hub_dataset

            name, _, rest = spec[3:].partition(":")
            config, _, split = rest.rpartition(":") if ":" in rest else ("", "", rest)
            ds = load_hub_dataset(name, config or None, split=split or "train")
            out[spec] = [next(r[k] for k in _EVAL_TEXT_KEYS if k in r) for r in ds]
            continue
        p = Path(spec)
        if not p.exists():
            raise FileNotFoundError(f"evaluation set {spec} does not exist")
        if p.is_dir():
            files = sorted(p.rglob("*.jsonl")) + sorted(p.rglob("*.json"))
            if not files:
                raise FileNotFoundError(f"no .jsonl/.json evaluation file under {spec}")
        else:
            files = [p]
        for f in files:
            name = f.parent.name if f.stem == "test" else f.stem
            texts = out.setdefault(name, [])
            if f.suffix == ".json":
                rows = json.loads(f.read_text(encoding="utf-8"))
            else:
                rows = read_jsonl(f)
            for i, r in enumerate(rows, 1):
                key = next((k for k in _EVAL_TEXT_KEYS if k in r and isinstance(r[k], str)), None)
                if key is None:
                    raise ValueError(f"{f}:{i}: evaluation row has none of the fields {_EVAL_TEXT_KEYS}")
                texts.append(r[key])
    return out


def build_index(eval_sets: dict[str, list[str]], n: int = 8) -> dict[str, tuple[str, int]]:
    """8-gram -> (eval set, index of the eval question) of one question that contains it."""
    index: dict[str, tuple[str, int]] = {}
    for name, texts in eval_sets.items():
        for i, t in enumerate(texts):
            for g in word_ngrams(t, n):
                index.setdefault(g, (name, i))
    return index


def decontaminate(records: list[dict], eval_sets: dict[str, list[str]], n: int = 8, progress: bool = True):
    """Returns (kept, stats). stats: per source removed counts for both steps, the matched eval
    questions (set -> sorted indices), and one example per eval set."""
    from tqdm import tqdm

    index = build_index(eval_sets, n)
    kept, seen = [], set()
    per_source: dict[str, dict[str, int]] = {}
    matched: dict[str, set[int]] = {name: set() for name in eval_sets}
    removed_ids = []
    for rec in tqdm(records, desc="decontam", unit="q", disable=not progress):
        c = per_source.setdefault(rec["source_type"], {"in": 0, "contaminated": 0, "duplicate": 0, "kept": 0})
        c["in"] += 1
        hits = [index[g] for g in word_ngrams(rec["question"], n) if g in index]
        if hits:
            c["contaminated"] += 1
            for name, i in hits:
                matched[name].add(i)
            removed_ids.append(rec["id"])
            continue
        if rec["id"] in seen:
            c["duplicate"] += 1
            continue
        seen.add(rec["id"])
        c["kept"] += 1
        kept.append(rec)
    stats = {
        "per_source": per_source,
        "eval_sets": {name: {"questions": len(t), "matched": len(matched[name])} for name, t in eval_sets.items()},
        "contaminated": sum(c["contaminated"] for c in per_source.values()),
        "duplicates": sum(c["duplicate"] for c in per_source.values()),
        "kept": len(kept),
        "ngram": n,
    }
    return kept, stats, {name: sorted(v) for name, v in matched.items()}
