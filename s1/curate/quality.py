"""Quality filter (s1 §2.1, step 2): missing fields, empty/errored traces, bad formatting.

Every rule is checked on every record (a record can break several rules: each is counted); a
record breaking any rule is removed. Rules, in report order:
  missing_fields   empty question, or neither a reference answer nor a solution
  trace_errored    the trace came back with an error (engine error, no trace at all)
  trace_empty      empty thinking trajectory or empty attempt
  asy_figure       Asymptote figure code `[asy]` in the question (AIME questions are exempt, as in s1)
  image_link       [img] tags, markdown/HTML images, \\includegraphics, or links to image files
  broken_numbering enumerated items at line starts that do not run 1,2,3.. / a,b,c.. / i,ii,iii..
                   (MATH's power-of-two label lists 1,2,4,8.. are fine), or a question that starts
                   with a leftover problem number such as "3. " or "(5)"
"""
from __future__ import annotations

import re

RULES = ("missing_fields", "trace_errored", "trace_empty", "asy_figure", "image_link", "broken_numbering")

_ASY = re.compile(r"\[asy\]", re.I)
_IMAGE = re.compile(r"\[img\]|!\[[^\]]*\]\([^)]*\)|<img\b|\\includegraphics|https?://\S+\.(?:png|jpe?g|gif|svg|bmp|webp)\b", re.I)
# an item marker at the start of a line: "1." "1)" "(1)" "a)" "(a)" "(iii)"
_ITEM = re.compile(r"^[ \t]*(?:\((\d{1,2}|[a-h]|[ivx]{1,4})\)|(\d{1,2}|[a-h])[.)])[ \t]", re.M)
_LEADING_NUMBER = re.compile(r"^\s*(?:\(\d{1,3}\)|\d{1,3}\.)\s+\S")
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10}


def _marker_value(m: re.Match) -> tuple[str, int]:
    tok = m.group(1) or m.group(2)
    if tok.isdigit():
        return "num", int(tok)
    if tok in _ROMAN:   # only inside parentheses ("(i)", "(iv)"); letters stop at "h"
        return "roman", _ROMAN[tok]
    return "alpha", ord(tok) - ord("a") + 1


def broken_numbering(text: str) -> bool:
    """True if a numbered/lettered list skips, repeats or starts late, or the question starts
    with a stray problem number. "(i)" counts as roman numeral one, "(c)" as letter three."""
    if _LEADING_NUMBER.match(text):
        # "1. Let ..." alone is a leftover number; "1. ... \n 2. ..." is a list, checked below
        first = _ITEM.search(text)
        items = _ITEM.findall(text)
        if first is None or len(items) < 2:
            return True
    seqs: dict[str, list[int]] = {}
    for m in _ITEM.finditer(text):
        kind, v = _marker_value(m)
        seqs.setdefault(kind, []).append(v)
    for kind, vals in seqs.items():
        if vals == list(range(1, len(vals) + 1)):
            continue
        # MATH's "enter the sum of the labels" lists are labelled 1, 2, 4, 8, ...: not broken
        if kind == "num" and vals == [2 ** i for i in range(len(vals))]:
            continue
        return True
    return False


def check(rec: dict, has_traces: bool = True) -> list[str]:
    """Names of the rules this record breaks."""
    bad = []
    q = rec.get("question") or ""
    if not q.strip() or not ((rec.get("answer") or "").strip() or (rec.get("solution") or "").strip()):
        bad.append("missing_fields")
    if has_traces:
        if rec.get("trace_error"):
            bad.append("trace_errored")
        elif not (rec.get("thinking") or "").strip() or not (rec.get("attempt") or "").strip():
            bad.append("trace_empty")
    if _ASY.search(q) and not rec.get("source_type", "").lower().startswith("aime"):
        bad.append("asy_figure")
    if _IMAGE.search(q):
        bad.append("image_link")
    if broken_numbering(q):
        bad.append("broken_numbering")
    return bad


def quality_filter(records: list[dict], has_traces: bool = True, progress: bool = True) -> tuple[list[dict], dict]:
    from tqdm import tqdm

    kept = []
    per_source: dict[str, dict] = {}
    for r in tqdm(records, desc="quality", unit="q", disable=not progress):
        c = per_source.setdefault(r["source_type"], {"in": 0, **{k: 0 for k in RULES}, "removed": 0, "kept": 0})
        c["in"] += 1
        bad = check(r, has_traces)
        for rule in bad:
            c[rule] += 1
        if bad:
            c["removed"] += 1
        else:
            c["kept"] += 1
            kept.append(r)
    totals = {k: sum(c[k] for c in per_source.values()) for k in (*RULES, "removed", "kept")}
    return kept, {"per_source": per_source, "rules": totals, "kept": len(kept)}
