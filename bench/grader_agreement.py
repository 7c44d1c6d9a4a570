"""How often the graders agree: our rule grader (s1/evaluation/grader.py), Hugging Face
Math-Verify (s1/evaluation/mathverify.py, optional), s1's own procedure without a judge
(s1/evaluation/s1compat.py: digit strings as integers, else raw string equality) and, where given,
s1's procedure with its judge (--judge CKPT or --judge-url URL).

Sets (each pair: a text to grade, a reference, the answer kind):
- math500_refs     MATH500's reference solutions against their own `answer` field (all should pass)
- math500_shifted  solution i against the answer of problem i+1 (all but coincidences should fail)
- aime24_solutions AIME 2024's written solutions against their answers (answers stated in prose)
- judge_examples   the worked examples of s1's judge prompt: the attempt against each option,
                   expected verdict = s1's (its index / -1); the rules grade the whole attempt
                   when no answer can be extracted from it (as `grader.rule_index` does)
- run:<DIR>        the records of an `s1 eval` run folder (--run DIR, repeatable), per task

Writes bench/results/grader_agreement.{json,md} (or --out PREFIX): per set, how many pairs each
grader accepts, pairwise agreement, and the first disagreements between the rules and the others.

    python -m bench.grader_agreement                       # needs math-verify for its column
    python -m bench.grader_agreement --run runs/aime24 --judge-url http://localhost:8000/v1 --judge-model m
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    return Path(os.environ.get("S1_SHARED_DATA") or ROOT.parent / "shared" / "data")


def load_sets(runs: list[str]) -> dict[str, list[dict]]:
    from s1.evaluation.grader import last_boxed
    from s1.evaluation.judge import WORKED_EXAMPLES

    sets: dict[str, list[dict]] = {}
    eval_dir = _shared() / "eval"
    rows = [json.loads(line) for line in open(eval_dir / "math500" / "test.jsonl")]
    sets["math500_refs"] = [{"id": str(r.get("unique_id", i)), "text": r["solution"], "reference": r["answer"],
                             "kind": "math", "expected": True} for i, r in enumerate(rows)]
    def canon(t: str) -> str:
        return re.sub(r"^[a-z]=", "", t.replace(" ", ""))

    shifted = []
    for i, r in enumerate(rows):
        nxt = rows[(i + 1) % len(rows)]
        # a coincidence: the same answer string (up to spaces and a leading "x=")
        same = canon(last_boxed(r["solution"]) or "") == canon(nxt["answer"])
        shifted.append({"id": f"{i}->{(i + 1) % len(rows)}", "text": r["solution"], "reference": nxt["answer"],
                        "kind": "math", "expected": True if same else False})
    sets["math500_shifted"] = shifted
    aime = eval_dir / "aime24" / "test.jsonl"
    if aime.exists():
        arows = [json.loads(line) for line in open(aime)]
        sets["aime24_solutions"] = [{"id": str(r["id"]), "text": r["solution"], "reference": str(r["answer"]),
                                     "kind": "integer", "expected": True} for r in arows if r.get("solution")]
    ex = []
    for k, (options, attempt, verdict) in enumerate(WORKED_EXAMPLES):
        for j, opt in enumerate(options):
            ex.append({"id": f"ex{k}/opt{j + 1}", "text": attempt, "reference": opt, "kind": "math",
                       "expected": verdict == j + 1, "attempt": True})
    sets["judge_examples"] = ex
    for run in runs:
        cfg = json.load(open(os.path.join(run, "config.json")))
        recs = [json.loads(line) for line in open(os.path.join(run, "samples.jsonl")) if line.strip()]
        sets[f"run:{cfg.get('task')}:{os.path.basename(os.path.normpath(run))}"] = [
            {"id": f"{r['qid']}/{r['point']}/{r['sample']}", "text": r.get("text") or r.get("answer_text") or "",
             "reference": r["reference"], "kind": r["kind"], "choices": r.get("choices"),
             "question": r.get("question"), "expected": None} for r in recs]
    return sets


def grade_all(items: list[dict], judge=None, use_mv: bool = True) -> None:
    from s1.evaluation.grader import extract_answer, grade
    from s1.evaluation.s1compat import s1_extract, s1_grade, s1_judge_prompt

    mv_grade = None
    if use_mv:
        from s1.evaluation.mathverify import mv_grade
    prompts = []
    for it in items:
        v = it.setdefault("verdicts", {})
        ex = extract_answer(it["text"], it["kind"], it.get("choices"))
        if ex is None and it.get("attempt"):   # what the judge is shown: an attempt, graded whole
            ex = it["text"].strip()
        it["rules_extracted"] = ex
        v["rules"] = bool(grade(ex, it["reference"], it["kind"]))
        s1ex = s1_extract(it["text"])
        it["s1_extracted"] = s1ex
        v["s1_nojudge"] = s1_grade(s1ex, it["reference"], it["kind"])["correct"]
        if mv_grade is not None:
            v["mathverify"] = mv_grade(it["text"], it["reference"], it["kind"])
        prompts.append(s1_judge_prompt(s1ex, it["reference"], it["kind"], it.get("question"), it.get("choices"))
                       if judge is not None else None)
    if judge is not None:
        todo = sorted({p for p in prompts if p is not None})
        replies = dict(zip(todo, judge(todo))) if todo else {}
        for it, p in zip(items, prompts):
            it["verdicts"]["s1_judge"] = s1_grade(it["s1_extracted"], it["reference"], it["kind"],
                                                  reply=replies.get(p) if p else None)["correct"]


def summarize(name: str, items: list[dict]) -> dict:
    graders = list(items[0]["verdicts"]) if items else []
    out = {"set": name, "pairs": len(items), "accepted": {g: sum(it["verdicts"][g] for it in items) for g in graders}}
    if items and items[0]["expected"] is not None:
        out["expected_true"] = sum(bool(it["expected"]) for it in items)
        out["matches_expected"] = {g: sum(it["verdicts"][g] == bool(it["expected"]) for it in items) for g in graders}
    out["agreement"] = {f"{a}~{b}": sum(it["verdicts"][a] == it["verdicts"][b] for it in items)
                        for i, a in enumerate(graders) for b in graders[i + 1:]}
    dis = {}
    for g in graders:
        if g == "rules":
            continue
        rows = [it for it in items if it["verdicts"]["rules"] != it["verdicts"][g]]
        dis[g] = {"rules_only": sum(it["verdicts"]["rules"] for it in rows),
                  f"{g}_only": sum(it["verdicts"][g] for it in rows),
                  "examples": [{"id": it["id"], "reference": it["reference"],
                                "rules_extracted": it["rules_extracted"], "rules": it["verdicts"]["rules"],
                                g: it["verdicts"][g], "text_tail": it["text"][-160:]} for it in rows[:8]]}
    out["disagreements_with_rules"] = dis
    return out


def markdown(result: dict) -> str:
    lines = ["# Grader agreement", "",
             f"commit {result['commit']}, {result['date']}, math-verify {result['math_verify'] or 'not installed'}, "
             f"judge {result['judge'] or 'none'}", "",
             "Columns: pairs accepted by each grader (and, where the set has an expected verdict, pairs on which "
             "the grader gives it); agreement = pairs on which two graders give the same verdict.", ""]
    graders = result["graders"]
    lines += ["| set | pairs | expected true | " + " | ".join(f"{g} accepts (= expected)" for g in graders) + " |",
              "|---|---|---|" + "---|" * len(graders)]
    for s in result["sets"]:
        cells = []
        for g in graders:
            acc = s["accepted"].get(g)
            m = s.get("matches_expected", {}).get(g)
            cells.append("-" if acc is None else f"{acc}" + (f" ({m}/{s['pairs']})" if m is not None else ""))
        lines.append(f"| {s['set']} | {s['pairs']} | {s.get('expected_true', '-')} | " + " | ".join(cells) + " |")
    pairs = sorted({k for s in result["sets"] for k in s["agreement"]})
    lines += ["", "| set | " + " | ".join(p.replace("~", " vs ") for p in pairs) + " |", "|---|" + "---|" * len(pairs)]
    for s in result["sets"]:
        lines.append(f"| {s['set']} | " + " | ".join(
            f"{s['agreement'][p]}/{s['pairs']} ({100 * s['agreement'][p] / s['pairs']:.1f}%)" if p in s["agreement"]
            else "-" for p in pairs) + " |")
    lines += ["", "## First disagreements with the rule grader", ""]
    for s in result["sets"]:
        for g, d in s["disagreements_with_rules"].items():
            if not d["examples"]:
                continue
            lines.append(f"- **{s['set']}**, rules vs {g}: rules-only {d['rules_only']}, {g}-only {d[g + '_only']}")
            for e in d["examples"]:
                tail = e["text_tail"].replace("\n", " ").replace("|", "\\|")
                lines.append(f"  - `{e['id']}` ref `{e['reference']}`, rules extracted `{e['rules_extracted']}` "
                             f"(rules {e['rules']}, {g} {e[g]}): …{tail[-100:]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.grader_agreement", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="an `s1 eval` run folder (repeatable)")
    ap.add_argument("--judge", help="s1's judge on this local checkpoint")
    ap.add_argument("--judge-url", help="s1's judge at this OpenAI-compatible endpoint")
    ap.add_argument("--judge-model", default="gpt-4o-mini", help="model name at --judge-url")
    ap.add_argument("--judge-cache", default="/tmp/grader_agreement_judge_cache.jsonl", help="judge reply cache")
    ap.add_argument("--no-mathverify", action="store_true", help="skip Math-Verify even when installed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "grader_agreement"), help="output prefix")
    a = ap.parse_args(argv)

    from s1.evaluation.judge import make_judge
    from s1.evaluation.mathverify import available

    use_mv = available() and not a.no_mathverify
    if not use_mv and not a.no_mathverify:
        print("grader_agreement: math-verify not installed; its column is left out "
              "(pip install -e .[mathverify])", file=sys.stderr)
    judge = make_judge(model=a.judge, url=a.judge_url, url_model=a.judge_model, cache=a.judge_cache)
    t0 = time.perf_counter()
    sets = load_sets(a.run)
    summaries = []
    for name, items in sets.items():
        grade_all(items, judge, use_mv)
        summaries.append(summarize(name, items))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    mv_version = None
    if use_mv:
        from importlib.metadata import version
        mv_version = version("math-verify")
    graders = ["rules", "s1_nojudge"] + (["mathverify"] if use_mv else []) + (["s1_judge"] if judge else [])
    result = {"bench": "grader_agreement", "commit": commit,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "python": platform.python_version(), "math_verify": mv_version,
              "judge": getattr(judge, "name", None), "graders": graders, "seconds": round(time.perf_counter() - t0, 2),
              "sets": summaries}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
