"""Curation as s1 ran it (`s1 curate --recipe s1`): the rules of s1's `data/` code, re-implemented.

Read from simplescaling/s1 `data/filter.ipynb` (filters, preselection, sampler),
`data/bulk_inference.py` (the students) and `data/featurization.py` + `data/grading.txt` (the
grader). Pure Python + numpy, no model: every rule here is tested on fixed inputs.

Quality (s1's "drop NAs" + "drop weird string patterns"):
- a row with any missing feature goes. s1 computed every feature first (student and Gemini grades,
  domain, trace length) and dropped rows where any was None; here each feature is checked where it
  is computed (question, reference, trace: quality stage; grades: difficulty stage; domain: domains
  stage). All filters are per-row predicates, so the surviving set is the same in either order.
  The reference is the `solution` field, or the answer where a source has no worked solution
  (s1's own AIME rows carry the bare answer in `solution`, data/add_aime.py).
- the question must not contain `[asy]` (unless the source is AIME), the literal `![Image]`,
  `p1.` .. `p999.` anywhere (numbered sub-problem lists), or a match of
  `\\*\\*(?=.*\\d)[^\\s\\]]*\\*\\*` (bold tokens with a digit later on the line). s1's exemption
  is wider than "`[asy]` is allowed for AIME": an AIME question containing `[asy]` is kept whatever
  else it contains (the notebook's `elif "[asy]" in question` branch); kept here as s1 ran it.

Source kinds (s1's names, and this project's pool folders): AIME = `qq8933/AIME_1983_2024` or any
source whose name contains "aime" (s1 tests `'AIME' in source_type`, case-sensitive; the pool
folder is lower-case `aime_1983_2024`); GPQA = `Idavidrein/gpqa` or a name containing "gpqa";
MATH = `qfq/openaimath` or the pool's `math_train` / `math_test` folders.

Preselection: the teacher's attempt graded correct AND (GPQA or AIME source, or MATH with a
thinking trace longer than 5,600 tokens).

Sampler (s1's "diversity sampling" + "power-law length sampling"), until `size` are chosen:
- the domain: uniformly among the domains that still have questions while fewer than 700 are
  chosen (the preselected count), afterwards in proportion to the benchmark histogram:
  AIME counts per domain plus int(GPQA count x 0.5 |AIME| / |GPQA|) (domains whose count is 0 are
  left out, as Counter addition does), both counted over the candidates;
- inside the domain: rank the remaining questions by trace length (longest = rank 0) and draw one
  with probability proportional to 2^(-rank); remove it from the domain (an emptied domain leaves
  both the uniform list and the histogram, which is renormalized).
- the domain lists hold every candidate, preselected ones included (s1 builds them from the whole
  filtered set): drawing an already chosen question removes it and chooses nothing new.
- seeded (numpy Generator); s1 used the unseeded global numpy state. Ties in trace length are
  broken by id (s1: by numpy's argsort order).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

# ------------------------------------------------------------------------------ sources
AIME_SOURCE, GPQA_SOURCE, MATH_SOURCE = "qq8933/AIME_1983_2024", "Idavidrein/gpqa", "qfq/openaimath"
MATH_POOL_FOLDERS = ("math_train", "math_test")


def is_aime(source_type: str) -> bool:
    return "aime" in (source_type or "").lower()


def is_gpqa(source_type: str) -> bool:
    return "gpqa" in (source_type or "").lower()


def is_math(source_type: str) -> bool:
    s = (source_type or "").lower()
    return "openaimath" in s or s in MATH_POOL_FOLDERS


# ------------------------------------------------------------------------------ quality
QUALITY_RULES = ("missing_feature", "asy", "image", "p_numbered", "bold_digits")
_P_NUMBERED = re.compile(r"p[1-9]\d{0,2}\.")   # == any(f"p{i}." in q for i in range(1, 1000))
_BOLD_DIGITS = re.compile(r"\*\*(?=.*\d)[^\s\]]*\*\*")


def reference(rec: dict) -> str:
    """The 'full solution' s1 graded against: the worked solution, else the bare answer."""
    return (rec.get("solution") or "").strip() or (rec.get("answer") or "").strip()


def missing_features(rec: dict) -> bool:
    """A feature the quality stage can see is missing: question, reference, trace (errored/empty)."""
    return (not (rec.get("question") or "").strip() or not reference(rec) or bool(rec.get("trace_error"))
            or not (rec.get("thinking") or "").strip() or not (rec.get("attempt") or "").strip())


def string_rules(question: str, source_type: str) -> list[str]:
    """Names of s1's string rules the question breaks ([] = kept), with s1's AIME exemption."""
    if "[asy]" in question and is_aime(source_type):
        return []
    bad = []
    if "[asy]" in question:
        bad.append("asy")
    if "![Image]" in question:
        bad.append("image")
    if _P_NUMBERED.search(question):
        bad.append("p_numbered")
    if _BOLD_DIGITS.search(question):
        bad.append("bold_digits")
    return bad


def check(rec: dict) -> list[str]:
    bad = ["missing_feature"] if missing_features(rec) else []
    return bad + string_rules(rec.get("question") or "", rec.get("source_type") or "")


def quality_filter(records: list[dict], progress: bool = True) -> tuple[list[dict], dict]:
    """s1's quality rules on every record; same stats layout as s1.curate.quality."""
    from tqdm import tqdm

    kept, per_source = [], {}
    for r in tqdm(records, desc="quality (s1)", unit="q", disable=not progress):
        c = per_source.setdefault(r["source_type"], {"in": 0, **{k: 0 for k in QUALITY_RULES}, "removed": 0, "kept": 0})
        c["in"] += 1
        bad = check(r)
        for rule in bad:
            c[rule] += 1
        c["removed" if bad else "kept"] += 1
        if not bad:
            kept.append(r)
    totals = {k: sum(c[k] for c in per_source.values()) for k in (*QUALITY_RULES, "removed", "kept")}
    return kept, {"recipe": "s1", "per_source": per_source, "rules": totals, "kept": len(kept)}


# ------------------------------------------------------------------------------ students and grader
STUDENT_TEMPERATURE = 0.05
STUDENT_MAX_TOKENS = 32768
# data/grading.txt of simplescaling/s1 (Apache-2.0), the system prompt of its grader; kept
# byte for byte (trailing space on line 3, no final newline) so a replication asks the same thing.
GRADING_SYSTEM_PROMPT = (
    "You are an AI assistant for grading a science problem.\n"
    "The user will provide you with the question itself, an attempt made by a student and the correct "
    "answer to the problem.\n"
    "Your job is to judge whether the attempt is correct by comparing it with the correct answer. \n"
    "If the expected solution concludes with a number or choice, there should be no ambiguity.\n"
    "If the expected solution involves going through the entire reasoning process, you should judge the "
    "attempt based on whether the reasoning process is correct with correct answer if helpful.\n"
    "\n"
    "The user will provide the attempt and the correct answer in the following format:\n"
    "\n"
    "# Problem\n"
    "{problem}\n"
    "\n"
    "## Attempt\n"
    "{attempt}\n"
    "\n"
    "## Correct answer\n"
    "{solution}\n"
    "\n"
    "Explain your reasoning, and end your response on a new line with only \"Yes\" or \"No\" (without quotes).")


def student_messages(question: str) -> list[dict]:
    """s1's student prompt: the question as the only user turn (the chat template adds Qwen's
    default system turn), then `<|im_start|>assistant\\n`: plain chat, no thinking format."""
    return [{"role": "user", "content": question}]


def grading_user_prompt(question: str, attempt: str, solution: str) -> str:
    """The user turn s1 sent with GRADING_SYSTEM_PROMPT (its heading is `## Problem`, the
    system prompt's example says `# Problem`; s1 sent this)."""
    return f"## Problem\n{question}\n\n## Attempt\n{attempt}\n\n## Correct answer\n{solution}"


def parse_verdict(reply: str | None) -> bool | None:
    """The grader's last line "Yes" -> True, "No" -> False, anything else -> None (s1 asked again
    until it got one; a greedy local judge would answer the same, so the row has a missing feature).
    Trailing whitespace is ignored (s1's API replies had none)."""
    if reply is None:
        return None
    last = reply.rstrip().split("\n")[-1].strip()
    return {"Yes": True, "No": False}.get(last)


# ------------------------------------------------------------------------------ preselection
PRESELECT_MATH_MIN_TOKENS = 5600


def preselected(rec: dict) -> bool:
    """s1: the teacher's attempt is correct AND (GPQA or AIME, or MATH with a trace > 5,600 tokens)."""
    if rec.get("teacher_correct") is not True:
        return False
    src = rec.get("source_type") or ""
    if is_gpqa(src) or is_aime(src):
        return True
    return is_math(src) and (rec.get("trace_tokens") or 0) > PRESELECT_MATH_MIN_TOKENS


# ------------------------------------------------------------------------------ sampler
PHASE_SWITCH = 700


def benchmark_histogram(records: list[dict]) -> dict[str, int]:
    """AIME domain counts + int(GPQA domain counts x 0.5 |AIME| / |GPQA|), zero counts dropped."""
    aime = Counter(r["domain"] for r in records if is_aime(r.get("source_type") or ""))
    gpqa = Counter(r["domain"] for r in records if is_gpqa(r.get("source_type") or ""))
    ratio = 0.5 * sum(aime.values()) / sum(gpqa.values()) if gpqa else 0.0
    hist = Counter()
    for d, n in gpqa.items():
        hist[d] += int(n * ratio)
    for d, n in aime.items():
        hist[d] += n
    return {d: n for d, n in sorted(hist.items()) if n > 0}


def domain_probabilities(n_chosen: int, domains: list[str], histogram: dict[str, int],
                         phase_switch: int = PHASE_SWITCH) -> dict[str, float]:
    """The distribution the next domain is drawn from, given how many are chosen and which domains
    still have questions: uniform over `domains` below `phase_switch`, else the histogram restricted
    to those domains, renormalized."""
    if n_chosen < phase_switch:
        return {d: 1.0 / len(domains) for d in domains} if domains else {}
    w = {d: float(histogram[d]) for d in domains if histogram.get(d, 0) > 0}
    total = sum(w.values())
    return {d: v / total for d, v in w.items()} if total > 0 else {}


def by_length(items: list[dict]) -> list[dict]:
    """Longest trace first (rank 0); ties by id. Removing an item keeps the others in rank order,
    so a domain list is sorted once and rank = position."""
    return sorted(items, key=lambda r: (-(r.get("trace_tokens") or 0), r["id"]))


def rank_weights(n: int) -> np.ndarray:
    """p_rank ∝ 2^(-rank), rank = 0..n-1 (s1's power-law length sampling)."""
    w = np.exp2(-np.arange(n, dtype=np.float64))
    return w / w.sum()


def sample(records: list[dict], size: int, seed: int = 0, preselected_ids=(),
           phase_switch: int = PHASE_SWITCH, trace=None) -> list[dict]:
    """s1's sampler. records: candidates with id, domain, source_type, trace_tokens. Returns the
    preselected records then the drawn ones, in draw order. `trace` (a list) receives one
    (n_chosen_before, domain, id, new) tuple per draw. Stops early when the domains run dry or
    phase 2's histogram has no domain left."""
    by_id = {r["id"]: r for r in records}
    chosen = [by_id[i] for i in dict.fromkeys(preselected_ids)]
    taken = {r["id"] for r in chosen}
    hist = benchmark_histogram(records)
    pools: dict[str, list[dict]] = {}
    for r in records:
        pools.setdefault(r["domain"], []).append(r)
    pools = {d: by_length(v) for d, v in pools.items()}
    rng = np.random.default_rng(seed)
    while len(chosen) < size:
        probs = domain_probabilities(len(chosen), sorted(pools), hist, phase_switch)
        if not probs:
            break
        names = list(probs)
        d = names[int(rng.choice(len(names), p=np.array([probs[n] for n in names])))]
        cands = pools[d]
        pick = cands.pop(int(rng.choice(len(cands), p=rank_weights(len(cands)))))
        new = pick["id"] not in taken
        if new:
            chosen.append(pick)
            taken.add(pick["id"])
        if trace is not None:
            trace.append((len(chosen) - new, d, pick["id"], new))
        if not cands:
            del pools[d]
    return chosen
