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

import functools
from pathlib import Path

from s1.curate.store import derive_seed, lazy_engine, run_cached, sampling_params


@functools.lru_cache(maxsize=2)
def _fast_tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def count_tokens(texts: list[str], tokenizer_dir, batch: int = 1024, progress: bool = False) -> list[int]:
    """Qwen2.5 token counts via the `tokenizers` fast tokenizer (batch encode, no special tokens)."""
    from tqdm import tqdm

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {tokenizer_dir} (pass --tokenizer DIR)")
    tok = _fast_tokenizer(str(path.resolve()))
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


# ------------------------------------------------------------------------------ s1's recipe
def plain_chat_rows(llm, records: dict[str, dict], params: dict, seed: int):
    """compute_batch for run_cached: s1's students, plain chat (the question as one user turn of the
    checkpoint's chat template, then `<|im_start|>assistant\\n`; no thinking format), sampled with
    `params` (s1: temperature 0.05, up to 32,768 tokens)."""
    from s1.curate.s1rules import student_messages

    made = {"engine": None}           # an engine this function loaded (closed by compute.close)

    def engine():
        if hasattr(llm, "generate"):
            return llm
        if made["engine"] is None:
            made["engine"] = llm()
        return made["engine"]

    def close():
        if made["engine"] is not None and hasattr(made["engine"], "close"):
            made["engine"].close()
        made["engine"] = None

    def compute(ids):
        eng = engine()
        prompts = [eng.tokenizer.apply_chat_template(student_messages(records[i]["question"]), add_generation_prompt=True)
                   for i in ids]
        sps = [sampling_params(**{**params, "seed": derive_seed(seed, i)}) for i in ids]
        outs = eng.generate(prompts, sps, raw=True, use_tqdm=False)
        # plain generation: `answer` is the reply without its stop token (vLLM's output text, as s1 saved it)
        return [{"id": i, "attempt": o.answer or "", "finish_reason": o.finish_reason,
                 "error": getattr(o, "error", None)} for i, o in zip(ids, outs)]
    compute.close = close
    return compute


def judge_verdicts(judge, items: list[tuple[str, str, str]], batch_size: int = 64, desc: str = "judge",
                   progress: bool = True) -> list[bool | None]:
    """items: (question, attempt, reference) -> s1's verdict per item (True/False, None: no verdict),
    through `judge` (a s1.evaluation.judge.Judge: batched, cached)."""
    from tqdm import tqdm

    from s1.curate.s1rules import grading_user_prompt, parse_verdict

    prompts = [grading_user_prompt(q, a, s) for q, a, s in items]
    out = []
    bar = tqdm(total=len(prompts), desc=desc, unit="attempt", disable=not progress)
    for b in range(0, len(prompts), batch_size):
        out += [parse_verdict(r) for r in judge(prompts[b:b + batch_size])]
        bar.update(len(prompts[b:b + batch_size]))
    bar.close()
    return out


def rule_teacher_correct(rec: dict) -> bool:
    """Without a judge: the teacher's attempt against the reference answer by the offline grader."""
    from s1.evaluation.grader import extract_answer, grade

    kind = grade_kind(rec)
    pred = extract_answer(rec.get("attempt") or "", kind)
    return pred is not None and bool(rec.get("answer")) and bool(grade(pred, rec["answer"], kind=kind))


def difficulty_filter_s1(records: list[dict], students: list[tuple[str, object]], params: dict, seed: int,
                         cache_dir, tokenizer_dir, judge=None, batch_size: int = 64, progress: bool = True):
    """s1's difficulty stage: every student answers in plain chat, `judge` grades each attempt and
    the teacher's attempt against the full reference (s1.curate.s1rules.reference) with s1's
    grading prompt. A question with any missing verdict goes (s1's missing-feature rule), one that
    any student solves goes; the rest are kept with `students` {key: verdict}, `teacher_correct`
    and `trace_tokens`. Without students the student step is skipped; without a judge the
    teacher's attempt is graded by the offline rule grader (recorded as `teacher_graded_by`)."""
    from s1.curate.s1rules import reference

    if students and judge is None:
        raise ValueError("s1's difficulty filter grades the students' attempts with a judge: give --judge CKPT "
                         "or --judge-url URL (or no --students)")
    by_id = {r["id"]: r for r in records}
    attempts = {}
    for key, llm in students:   # one model in memory at a time: each student is closed before the next loads
        compute = plain_chat_rows(llm, by_id, params, seed)
        try:
            attempts[key] = run_cached(list(by_id), Path(cache_dir) / f"student_plain_{key}.jsonl", compute,
                                       batch_size, desc=f"difficulty ({key}, plain chat)", progress=progress)
        finally:
            compute.close()
    verdicts = {}
    for key in attempts:
        v = judge_verdicts(judge, [(r["question"], attempts[key][r["id"]]["attempt"], reference(r)) for r in records],
                           batch_size, f"judge ({key})", progress)
        verdicts[key] = dict(zip(by_id, v))
    if judge is not None:
        t = judge_verdicts(judge, [(r["question"], r.get("attempt") or "", reference(r)) for r in records],
                           batch_size, "judge (teacher)", progress)
        teacher, graded_by = dict(zip(by_id, t)), "judge"
        if hasattr(judge, "close"):
            judge.close()
    else:
        teacher, graded_by = {r["id"]: rule_teacher_correct(r) for r in records}, "rules (no judge)"
    lengths = count_tokens([r.get("thinking") or "" for r in records], tokenizer_dir, progress=progress)
    kept, per_source = [], {}
    per_student = {k: 0 for k in verdicts}
    no_verdict = {k: 0 for k in (*verdicts, "teacher")}
    for r, n in zip(records, lengths):
        c = per_source.setdefault(r["source_type"], {"in": 0, "missing_verdict": 0, "solved_by_a_student": 0,
                                                     "teacher_correct": 0, "kept": 0})
        c["in"] += 1
        sv = {k: verdicts[k][r["id"]] for k in verdicts}
        tv = teacher[r["id"]]
        for k, v in sv.items():
            per_student[k] += v is True
            no_verdict[k] += v is None
        no_verdict["teacher"] += tv is None
        c["teacher_correct"] += tv is True
        if tv is None or any(v is None for v in sv.values()):
            c["missing_verdict"] += 1
            continue
        if any(sv.values()):
            c["solved_by_a_student"] += 1
            continue
        c["kept"] += 1
        kept.append(dict(r, trace_tokens=n, students=sv, teacher_correct=tv, teacher_graded_by=graded_by))
    stats = {"recipe": "s1", "students": list(verdicts), "correct_per_student": per_student,
             "no_verdict": no_verdict, "teacher_graded_by": graded_by, "student_params": params,
             "per_source": per_source, "kept": len(kept), "skipped": not students,
             "trace_tokens": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                              "mean": round(sum(lengths) / max(len(lengths), 1), 1)}}
    return kept, stats
