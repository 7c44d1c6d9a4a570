"""Grades of a run's records by the rule grader, by s1's own procedure (s1compat, with or without
s1's judge), and how often the two agree.

`grade_records(records, grading, judge)`:
- every record gets the rule grader's verdict (`extracted`, `correct`: score_record);
- with grading "s1" or a judge, every record also gets `s1`: s1's extraction of the full output,
  the judge's reply where s1 would have asked it (all such prompts of the run in one batch,
  cached by the judge), s1's final answer and verdict;
- grading "s1": `correct` is s1's verdict (`rules_correct` keeps the rule grader's);
- grading "mathverify": every record gets `mathverify` (Math-Verify's verdict,
  s1/evaluation/mathverify.py, an optional extra) and `correct` is it.
`group_votes(records, grading)`: the majority-voting groups of each (point, question), formed
here so that metrics.py counts votes without grading anything: `vote_group` (index of the answer's
equivalence group, groups in sample order; None for no answer) and `vote_correct` (the verdict on
the group's first answer). Rules / Math-Verify group by the rule grader's equivalence; s1 grouped
its final answer strings exactly (`Counter(extracted_answers).most_common(1)`).
`agreement(records)`: per task, how many records both graders call right, call wrong, or differ on.
"""
from __future__ import annotations

from s1.evaluation.s1compat import s1_extract, s1_grade, s1_judge_prompt

GRADINGS = ("rules", "s1", "mathverify")


def _full_text(rec: dict) -> str:
    """The generation as s1 graded it (its split finds the answer part itself)."""
    text = rec.get("text")
    if text:
        return text
    return rec.get("answer_text") or ""


def score_record(rec: dict) -> dict:
    """(Re-)extract and grade one run by the rules, from its stored output text."""
    from s1.evaluation.grader import extract_answer, grade

    source = rec.get("answer_text")
    if source is None:
        source = rec.get("text", "")
    rec["extracted"] = extract_answer(source, rec["kind"], rec.get("choices"))
    rec["correct"] = bool(grade(rec["extracted"], rec["reference"], rec["kind"]))
    return rec


def grade_records(records: list[dict], grading: str = "rules", judge=None) -> list[dict]:
    if grading not in GRADINGS:
        raise ValueError(f"unknown grading {grading!r}; expected one of {GRADINGS}")
    if grading == "mathverify":
        from s1.evaluation.mathverify import MISSING, available
        if not available():
            raise ImportError(MISSING)
    for rec in records:
        score_record(rec)
        for k in ("rules_correct", "s1", "mathverify", "vote_group", "vote_correct"):
            rec.pop(k, None)
    if grading == "mathverify":
        from s1.evaluation.mathverify import mv_grade
        for rec in records:
            rec["mathverify"] = {"correct": mv_grade(_full_text(rec), rec["reference"], rec["kind"])}
            rec["rules_correct"], rec["correct"] = rec["correct"], rec["mathverify"]["correct"]
    if grading != "s1" and judge is None:
        return group_votes(records, grading)
    # s1's options for sample s of a question: the reference plus the final answers of samples
    # 0..s-1 (its `metrics["extracted_answers"]`), so the judge runs in rounds by sample index,
    # each round one batch.
    from collections import defaultdict

    by_q: dict = defaultdict(list)
    for rec in records:
        rec["s1"] = {"extracted": s1_extract(_full_text(rec))}
        by_q[(rec.get("point"), rec["qid"]) if "qid" in rec else id(rec)].append(rec)
    for rs in by_q.values():
        rs.sort(key=lambda r: r.get("sample", 0))
    for s in range(max((len(rs) for rs in by_q.values()), default=0)):
        batch = []
        for rs in by_q.values():
            if len(rs) > s:
                rec = rs[s]
                others = [r["s1"]["answer"] for r in rs[:s]] if rec["kind"] != "choice" else []
                p = s1_judge_prompt(rec["s1"]["extracted"], rec["reference"], rec["kind"],
                                    question=rec.get("question"), choices=rec.get("choices"),
                                    other_answers=others) if judge is not None else None
                batch.append((rec, others, p))
        todo = sorted({p for _, _, p in batch if p is not None})
        replies = dict(zip(todo, judge(todo))) if todo else {}
        for rec, others, p in batch:
            reply = replies.get(p) if p is not None else None
            got = s1_grade(rec["s1"]["extracted"], rec["reference"], rec["kind"], reply=reply,
                           other_answers=others)
            rec["s1"].update(got, judge_reply=reply)
            if grading == "s1":
                rec["rules_correct"] = rec["correct"]
                rec["correct"] = got["correct"]
    return group_votes(records, grading)


def group_votes(records: list[dict], grading: str = "rules") -> list[dict]:
    from collections import defaultdict

    from s1.evaluation.grader import grade

    by_q: dict = defaultdict(list)
    for r in records:
        by_q[(r.get("point"), r["qid"]) if "qid" in r else id(r)].append(r)   # a bare record: alone
    for rs in by_q.values():
        rs.sort(key=lambda r: r.get("sample", 0))
        reps: list[dict] = []          # the first record of each group
        for r in rs:
            exact = grading == "s1"
            ans = r["s1"]["answer"] if exact else r.get("extracted")
            if ans is None:
                r["vote_group"], r["vote_correct"] = None, False
                continue
            for g, rep in enumerate(reps):
                other = rep["s1"]["answer"] if exact else rep["extracted"]
                if ans == other or (not exact and grade(ans, other, r["kind"])):
                    break
            else:
                g = len(reps)
                reps.append(r)
            rep = reps[g]
            r["vote_group"] = g
            r["vote_correct"] = bool(rep["correct"]) if "correct" in rep else \
                bool(grade(rep["extracted"], rep["reference"], rep["kind"]))
    return records


def majority_vote(answers: list[str | None], kind: str = "math") -> str | None:
    """The most common answer up to grader equivalence; ties -> earliest first appearance.
    (A helper for callers with bare answers; a run's records vote through `group_votes` and
    metrics.majority_curve.)"""
    from s1.evaluation.grader import grade

    groups: list[list] = []  # [representative, count]
    for a in answers:
        if a is None:
            continue
        for g in groups:
            if a == g[0] or grade(a, g[0], kind):
                g[1] += 1
                break
        else:
            groups.append([a, 1])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))  # count, then earliest group
    return groups[best][0]


def mathverify_agreement(records: list[dict], task: str | None = None) -> dict | None:
    both = [r for r in records if "mathverify" in r]
    if not both:
        return None
    rules = [r.get("rules_correct", r["correct"]) for r in both]
    mv = [r["mathverify"]["correct"] for r in both]
    agree = sum(a == b for a, b in zip(rules, mv))
    return {"task": task, "records": len(both), "rules_correct": sum(rules), "mathverify_correct": sum(mv),
            "agree": agree, "agreement": agree / len(both),
            "rules_only": sum(a and not b for a, b in zip(rules, mv)),
            "mathverify_only": sum(b and not a for a, b in zip(rules, mv))}


def agreement(records: list[dict], task: str | None = None, judge_name: str | None = None) -> dict:
    """Rule grader vs s1's procedure over the records that carry both verdicts."""
    both = [r for r in records if "s1" in r]
    rules = [r.get("rules_correct", r["correct"]) for r in both]
    s1v = [r["s1"]["correct"] for r in both]
    n = len(both)
    agree = sum(a == b for a, b in zip(rules, s1v))
    out = {"task": task, "judge": judge_name, "records": n,
           "rules_correct": sum(rules), "s1_correct": sum(s1v), "judged": sum(r["s1"]["judged"] for r in both),
           "agree": agree, "agreement": agree / n if n else None,
           "rules_only": sum(a and not b for a, b in zip(rules, s1v)),
           "s1_only": sum(b and not a for a, b in zip(rules, s1v))}
    return out


def agreement_markdown(ag: dict) -> str:
    if not ag or not ag.get("records"):
        return ""
    who = f"s1's procedure with judge `{ag['judge']}`" if ag.get("judge") else "s1's procedure without a judge"
    return (f"Graders on {ag['task']}: rule grader vs {who}: agree on {ag['agree']}/{ag['records']} "
            f"({100 * ag['agreement']:.1f}%); right by rules {ag['rules_correct']}, by s1 {ag['s1_correct']}; "
            f"rules-only {ag['rules_only']}, s1-only {ag['s1_only']}; judge asked for {ag['judged']}.")
