"""Grading as s1 ran it (its lm-evaluation-harness fork: `tasks/openai_math/utils.py`,
`tasks/aime/utils.py`, `tasks/gpqa/openai/utils.py`, `process_results`), reimplemented.

Extraction (`s1_extract`), in s1's order:
1. the text after the last `<|im_start|>answer\\n`; else, when the text holds `<|im_start|>` at
   all, the text after the last one minus its first line;
2. the content of the last `\\boxed{...}` (plain brace counting from the last `\\boxed`, else the
   last `\\fbox`); if the text holds `\\boxed ` (with a space) anywhere, what follows the last
   `\\boxed ` up to the next `$` instead;
3. else the last match of `(?i)Answer\\s*:\\s*(.*)` under re.DOTALL, which is everything after
   the first `Answer:` (the greedy `.*` swallows any later one);
4. else the text of step 1 unchanged. Nothing is stripped.

Grading (`s1_grade`):
- AIME / MATH ("integer" / "math"): a reference made of digits only is written as an integer
  ("023" -> "23"); when the extracted answer is digits only too it is too, and the two strings are
  compared. Otherwise s1 asked gpt-4o-mini which option (`EXTRACTION_TEMPLATE_IDX`, options = the
  reference, then the distinct final answers of the question's earlier samples, in set order
  there, sorted here) the attempt matches, took that
  option when the answer was an index in range, and compared strings. Without a judge s1 compared
  the raw strings (its `sampler is None` branch); so does `s1_grade(judge=None)`.
- GPQA ("choice"): a lone lower-case a-d is upper-cased; an answer other than A, B, C, D goes to
  the judge with the GPQA `EXTRACTION_TEMPLATE` (question with options), whose reply must be a
  letter A-D; else the answer is "A" (s1's default). Correct when it equals the reference letter.

Deviations, all where s1 would crash or where only whitespace differs: s1 raised AssertionError
for a last box that is `\\fbox{...}` or `\\boxed` not followed by `{` (we take the `\\fbox` content
and treat the latter as no box); s1 compared the judge's raw reply with "-1" and checked
`isdigit()`; we strip surrounding whitespace first (a local model often ends with a newline).
"""
from __future__ import annotations

import re

ANSWER_SPLIT = "<|im_start|>answer\n"
IM_START = "<|im_start|>"
ANSWER_PATTERN = r"(?i)Answer\s*:\s*(.*)"     # s1's (from openai/simple-evals), used with re.DOTALL
GPQA_LETTERS = ("A", "B", "C", "D")
GPQA_DEFAULT = "A"


def s1_answer_part(text: str) -> str:
    """Step 1 of s1's extraction: the part of a generation that holds the answer."""
    if ANSWER_SPLIT in text:
        return text.split(ANSWER_SPLIT)[-1]
    if IM_START in text:
        part = text.split(IM_START)[-1]
        if "\n" in part:
            part = "\n".join(part.split("\n")[1:])
        return part
    return text


def s1_last_boxed(text: str) -> str | None:
    """Step 2: the content of s1's last box, or None when it finds none."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                box = text[idx : i + 1]
                for left in ("\\boxed{", "\\fbox{"):
                    if box.startswith(left):
                        return box[len(left) : -1]
                return None  # "\boxed" not followed by "{": s1's assertion failed here
    return None


def s1_extract(text: str | None) -> str | None:
    """The answer string s1 would grade (None only for no text)."""
    if text is None:
        return None
    a = s1_answer_part(text)
    box = s1_last_boxed(a)
    if box is not None:
        return box
    matches = re.findall(ANSWER_PATTERN, a, re.DOTALL)
    if matches:
        return matches[-1]
    return a


def _canonical_digits(s: str) -> str:
    """'023' -> '23' for strings of ASCII digits; anything else unchanged."""
    if s.isdigit() and s.isascii():
        return str(int(s))
    return s


def _options(reference: str, other_answers: list[str] | None) -> list[str]:
    gt = _canonical_digits(str(reference))
    return [gt] + sorted(set(other_answers or []) - {gt})   # s1: [gt] + list(set(...) - {gt})


def s1_judge_prompt(extracted: str | None, reference: str, kind: str, question: str | None = None,
                    choices: list[str] | None = None, other_answers: list[str] | None = None) -> str | None:
    """The prompt s1 sent its judge for this answer, or None where s1 asked no judge."""
    from s1.evaluation.judge import gpqa_prompt, index_prompt, options_string

    a = "" if extracted is None else str(extracted)
    if kind == "choice":
        if a in GPQA_LETTERS or a in ("a", "b", "c", "d"):
            return None
        return gpqa_prompt(question or "", choices or [], a)
    gt = _canonical_digits(str(reference))
    if a.isdigit() and a.isascii() and gt.isdigit():
        return None
    return index_prompt(options_string(_options(reference, other_answers)), a,
                        task="aime" if kind == "integer" else "math")


def s1_grade(extracted: str | None, reference: str, kind: str, reply: str | None = None,
             other_answers: list[str] | None = None) -> dict:
    """Grade one s1-extracted answer as s1 did, given the judge's `reply` to `s1_judge_prompt`
    (None: no judge was run, s1's `sampler is None` branch). Returns {"answer": the final answer
    string, "correct": bool, "judged": whether a judge reply was used}."""
    from s1.evaluation.judge import parse_index, parse_letter

    a = "" if extracted is None else str(extracted)
    judged = False
    if kind == "choice":
        if a in ("a", "b", "c", "d"):
            a = a.upper()
        if a not in GPQA_LETTERS and reply is not None:
            judged = True
            letter = parse_letter(reply)
            a = letter if letter is not None else a
        if a not in GPQA_LETTERS:
            a = GPQA_DEFAULT
        return {"answer": a, "correct": a == str(reference).strip(), "judged": judged}
    gt = _canonical_digits(str(reference))
    if a.isdigit() and a.isascii() and gt.isdigit():
        a = str(int(a))
    elif reply is not None:
        judged = True
        options = _options(reference, other_answers)
        idx = parse_index(reply, len(options))
        if idx is not None:
            a = options[idx]
    return {"answer": a, "correct": a == gt, "judged": judged}
