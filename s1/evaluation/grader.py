"""Offline answer extraction and grading, pure Python, no dependencies.

s1 graded MATH with gpt-4o-mini as an equivalence judge and used it to pick GPQA letters; this
module replaces that judge with rules that can run anywhere:

- `extract_answer(text, kind)`: the text after the last `<|im_start|>answer` (when present), then
  the last `\\boxed{...}` / `\\fbox{...}` (nested braces), else the last `Answer:` /
  `Final Answer:` / "the final answer is" line, else (integer tasks only) the last number;
  for multiple choice ("choice") the option letter.
- `grade(pred, reference, kind)`:
  - "integer" (AIME): both sides parsed as integers ("025" == 25, "25.0" == 25, "1,000" == 1000).
  - "choice" (GPQA): letters compared case-insensitively.
  - "math" (MATH-500, AMC): string equality after LaTeX normalization (`normalize`), then
    structural comparison (tuples, intervals with bracket types, sets / comma lists unordered,
    `\\pm`, matrices, equations), then numeric comparison with a tiny own evaluator (fractions,
    roots, powers, pi, i, trig/log, implicit multiplication; free variables are substituted with
    fixed pseudo-random values so `x^2+2x` == `x(x+2)` — polynomial identity testing).
    Tolerance: relative 1e-6 (absolute 1e-9 near zero), so 3.14 != \\pi but 0.5 == \\frac12.
    Percent signs are dropped (50\\% == 50); units after a number are dropped (5 cm == 5).
    Where s1's judge prompt (s1/evaluation/judge.py) gives a verdict, the rules give the same:
    `x in 75` == 75^\\circ, a bare list == a tuple in any order (`-2, 1` == (1,-2)), ordinals
    (12^{\\mathrm{th}} == 12), digits == the same digits in a base (2516 == 2516_8, but 54 != 204_5),
    "...it is navin" == \\text{Navin}. Also: inequalities are intervals (x > 2 == (2,\\infty)),
    labelled values (k = 45, n = 2) compare label by label or as a list, ';' separates lists.

Extraction also joins an answer split over several boxes ("\\boxed{2} and \\boxed{3}" -> "2, 3"),
reads an integer stated in a sentence ("So m+n = 116 + 1 = 117" -> 117), and for "choice" takes
A-D (more letters only when a question lists more options), an upper-case letter after "Answer",
a lower-case one only standing alone ("Answer: I think it is c" -> C).

Nothing here calls eval(): expressions go through a recursive-descent parser over a fixed token
set, and anything it does not know makes the numeric path give up (falls back to "not equal").
"""
from __future__ import annotations

import cmath
import math
import random
import re
from functools import lru_cache

from s1.model.tokenizer import ANSWER_DELIMITER

KINDS = ("integer", "math", "choice")
CHOICE_LETTERS = "ABCDEFGHIJ"
DEFAULT_LETTERS = "ABCD"   # GPQA's; more only when a question lists more options

# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

ANSWER_DELIM = ANSWER_DELIMITER   # the s1 answer delimiter (s1/model/tokenizer.py)
_SPECIAL_TOKEN = re.compile(r"<\|[a-z_]+\|>")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {KINDS}")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """text[start] == '{': return (content, index after the matching '}') or None if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue  # \{ and \} are literal braces inside set notation; skipped below
        if c == "{" and not (i > 0 and text[i - 1] == "\\"):
            depth += 1
        elif c == "}" and not (i > 0 and text[i - 1] == "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} or \fbox{...} (nested braces), or `\boxed 5` (space form)."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{|\s)", text):
        if m.group(1) == "{":
            got = _braced(text, m.end() - 1)
            if got is not None:
                best = got[0]
        else:  # "\boxed 5": the argument runs to the next '$' or whitespace
            arg = re.match(r"\s*([^\s$]+)", text[m.end() :])
            if arg:
                best = arg.group(1)
    return best


_ANSWER_LINE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*(.+)|the\s+(?:final\s+)?answer\s+is\s*[:：]?\s*(.+)",
    re.IGNORECASE,
)


_BOX_CONNECTOR = re.compile(
    r"(?:[\s$,;.~]|\\[,;:! ]|\\q?quad\b|\b(?:and|or)\b"
    r"|\\text\s*\{[^{}]{0,30}?\b(?:and|or)\b[^{}]{0,30}?\})*")


def _trailing_boxes(text: str) -> list[str]:
    r"""The contents of the last boxes of `text` joined by ',', ';', 'and' or 'or' (with '$', spaces,
    \quad around them); the last box alone when anything else separates them."""
    spans = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        got = _braced(text, m.end() - 1)
        if got is not None:
            spans.append((m.start(), got[1], got[0]))
    run: list[str] = []
    for k in range(len(spans) - 1, -1, -1):
        start, end, content = spans[k]
        between = text[end : spans[k + 1][0]] if run else ""
        if run and (end > spans[k + 1][0] or not _BOX_CONNECTOR.fullmatch(between)
                    or not re.search(r"[,;]|\b(?:and|or)\b", between)):
            break   # nested boxes, other text between them, or no "," / "and" joining them
        run.insert(0, content)
    return run


def _clean(ans: str) -> str:
    ans = ans.strip()
    ans = re.sub(r"^(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*", "", ans, flags=re.IGNORECASE)
    # "The final answer is $5$. I hope it is correct." (Minerva style) -> keep the first sentence.
    ans = re.sub(r"\.\s+I hope it is correct\.?$", "", ans, flags=re.IGNORECASE)
    ans = ans.strip()
    if ans.startswith("$") and ans.count("$") >= 2:
        ans = ans[1 : ans.index("$", 1)] if not ans.startswith("$$") else ans.strip("$")
    return ans.strip().strip("$").strip()


def _strip_sentence_period(ans: str) -> str:
    ans = ans.strip()
    if ans.endswith(".") and len(ans) > 1:
        ans = ans[:-1]
    return ans.strip()


def answer_section(text: str) -> str:
    """The part of a generation after the last `<|im_start|>answer` (`</think>` for <think> models,
    s1/model/thinking.py), without special tokens."""
    if ANSWER_DELIM in text:
        text = text.rsplit(ANSWER_DELIM, 1)[1]
    elif "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    text = text.split("<|im_end|>", 1)[0]
    return _SPECIAL_TOKEN.sub("", text)


def _answer_line(text: str) -> str | None:
    found = None
    for line in text.splitlines():
        for m in _ANSWER_LINE.finditer(line):
            cand = (m.group(1) or m.group(2) or "").strip()
            if cand:
                found = cand
    return found


def _letter_patterns(letters: str) -> list[str]:
    """Pattern families for an option letter, most explicit first. After "answer" ("Answer:",
    "the answer is", any case) an upper-case letter counts, a lower-case one only when it stands
    alone ("answer: c.", "answer is (b)"), so "Answer: I think it is c" is not "I"; then a letter
    closing an answer line ("... it is c"); then "(B)", a lone "B" line, "B)"."""
    U, L = letters, letters.lower()
    lead = r"(?i:answer\s*(?:is|:)?)\s*[:：]?\s*\**\s*\(?\s*"
    return [
        lead + rf"(?:([{U}])(?![\w'])|([{L}])(?=\s*[).:,;*]|\s*$))",
        rf"(?i:answer)\b[^\n]*?(?:\b(?i:is|be|choose|pick|option)\s+\(?\**([{U}{L}])\**\)?"
        rf"|(?<![\w'])\(?\**([{U}])\**\)?)\s*[.!]?\s*$",
        rf"\(([{U}])\)",
        rf"^\s*\**([{U}])[).:]?\**\s*$",
        rf"\b([{U}])\)",
    ]


def _extract_letter(text: str, letters: str = DEFAULT_LETTERS) -> str | None:
    """The option letter (one of `letters`): boxed, after 'answer', closing an answer line, '(B)',
    a lone 'B' line or 'B)'; last match wins inside the first pattern family that matches at all."""
    boxed = last_boxed(text)
    if boxed is not None:
        b = re.sub(r"\\text\{([^{}]*)\}", r"\1", boxed).strip().strip("()").strip()
        if len(b) == 1 and b.upper() in letters:
            return b.upper()
        m = re.match(rf"^\(?([{letters}])\)", b)
        if m:
            return m.group(1)
    for pat in _letter_patterns(letters):
        hits = re.findall(pat, text, flags=re.MULTILINE)
        if hits:
            last = hits[-1]
            last = next((h for h in last if h), "") if isinstance(last, tuple) else last
            return last.upper()
    return None


def _letters_for(choices: list[str] | None) -> str:
    return CHOICE_LETTERS[: max(len(choices), 1)] if choices and len(choices) > 4 else DEFAULT_LETTERS


_SENTENCE_INT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*)\s*\$?\s*[.!]?\s*$")


def _integer_from_sentence(ans: str) -> str | None:
    """An integer answer stated in a sentence: "So m+n = 116 + 1 = 117" -> "117" (the value after
    the last '='), else the last integer when the sentence holds exactly one."""
    m = _SENTENCE_INT.search(ans.strip())
    if m:
        return m.group(1).rstrip(",")
    nums = re.findall(r"(?<![\w.])-?\d+(?![\d.]*\w)", ans)
    return nums[0] if len(nums) == 1 else None


def _letter_from_option_text(section: str, choices: list[str]) -> str | None:
    """The letter of the one option whose text appears in the answer (none or several -> None)."""
    def norm(t: str) -> str:
        return re.sub(r"\s+", " ", t).strip().lower().rstrip(".")

    body = norm(section)
    hits = [k for k, c in enumerate(choices) if norm(c) and re.search(r"(?<!\w)" + re.escape(norm(c)) + r"(?!\w)", body)]
    # An option whose text is part of another hit's text ("4" in "4 m/s") yields to the longer one.
    hits = [k for k in hits if not any(k != j and norm(choices[k]) in norm(choices[j]) for j in hits)]
    return CHOICE_LETTERS[hits[0]] if len(hits) == 1 else None


def extract_answer(text: str | None, kind: str = "math", choices: list[str] | None = None) -> str | None:
    """Extract the final answer string from a generation (or from the engine's `.answer`).

    Order: text after `<|im_start|>answer` when present; then the last
    `\\boxed{}`/`\\fbox{}`; else the last `Answer:`-style line; else, for "integer", the last
    integer-looking number. For "choice" the result is a single upper-case letter; when the answer
    names no letter but `choices` (option texts in A, B, C, D order) are given, the letter of the
    single option whose text appears in the answer.
    Returns None when nothing answer-like is found.
    """
    _check_kind(kind)
    if text is None:
        return None
    section = answer_section(text)
    if kind == "choice":
        letter = _extract_letter(section, _letters_for(choices))
        if letter is None and choices:
            letter = _letter_from_option_text(section, choices)
        return letter
    boxed = last_boxed(section)
    if boxed is not None:
        run = _trailing_boxes(section)
        distinct: list[str] = []
        for b in run:   # "\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}": one answer written twice
            if b.strip() and not any(math_equal(b, d) for d in distinct):
                distinct.append(b.strip())
        if len(distinct) > 1:   # "\boxed{2} and \boxed{3}": one answer split over several boxes
            return ", ".join(distinct)
        return boxed.strip() or None
    line = _answer_line(section)
    if line is not None:
        inner = last_boxed(line)
        ans = _strip_sentence_period(_clean(inner if inner is not None else line).lstrip(":：").strip())
        # An answer line with nothing answer-like in it (":::" from a confused model) is skipped;
        # for integer tasks the line must contain a digit.
        if ans and re.search(r"\w", ans) and (kind != "integer" or re.search(r"\d", ans)):
            if kind == "integer" and parse_integer(ans) is None:
                ans = _integer_from_sentence(ans) or ans
            return ans
    if kind == "integer":
        # numbers standing alone: not the digits of a name ("-sepehr2010" signs an AIME solution)
        nums = re.findall(r"(?<![A-Za-z_\d])-?\d[\d,]*(?:\.\d+)?", section)
        nums = [n.rstrip(",") for n in nums]
        if nums:
            return nums[-1]
    return None


# --------------------------------------------------------------------------------------------
# Normalization (string level)
# --------------------------------------------------------------------------------------------

_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
}
# Unit words dropped after a number ("5 cm", "12 square units", "3 dollars").
_UNITS = (
    r"(?:square\s+|sq\.?\s+|cubic\s+)?(?:units?|cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|"
    r"inch(?:es)?|in|feet|foot|ft|yards?|miles?|mph|hours?|hrs?|minutes?|mins?|seconds?|secs?|"
    r"days?|weeks?|months?|years?|degrees?|deg|cents?|dollars?|pounds?|lbs?|kg|grams?|g|liters?|"
    r"people|students|ways|points?|cookies|marbles|apples|coins|times|percent|per\s?cent)"
)


def _fix_fracs(s: str) -> str:
    r"""\frac34 -> \frac{3}{4}, \frac9{19} -> \frac{9}{19}, \frac{1}2 -> \frac{1}{2} (LaTeX takes a
    single token when an argument has no braces)."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i) and not s[i + 5 : i + 6].isalpha():
            out.append("\\frac")
            i += 5
            for _ in range(2):
                while i < len(s) and s[i] == " ":
                    i += 1
                if i >= len(s):
                    break
                if s[i] == "{":
                    got = _braced(s, i)
                    if got is None:
                        out.append(s[i:])
                        i = len(s)
                        break
                    out.append("{" + got[0] + "}")
                    i = got[1]
                elif s[i] == "\\":
                    m = re.match(r"\\[a-zA-Z]+", s[i:])
                    tok = m.group(0) if m else s[i : i + 2]
                    out.append("{" + tok + "}")
                    i += len(tok)
                else:
                    out.append("{" + s[i] + "}")
                    i += 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _fix_sqrt(s: str) -> str:
    r"""\sqrt2 -> \sqrt{2}, \sqrt x -> \sqrt{x} (\sqrt{..} and \sqrt[n]{..} unchanged)."""
    return re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)


def _strip_text_wrappers(s: str) -> str:
    r"""\text{abc} -> abc (also \textbf, \mbox, \mathrm, \mathbf, \operatorname)."""
    pat = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|mathit|operatorname|boldsymbol|mathnormal)\s*\{")
    while True:
        m = pat.search(s)
        if not m:
            return s
        got = _braced(s, m.end() - 1)
        if got is None:
            return s[: m.start()] + s[m.end() :]
        s = s[: m.start()] + got[0] + s[got[1] :]


def normalize(ans: str) -> str:
    """Canonical string for a math answer (Hendrycks-MATH style, extended). Lower-cased."""
    s = str(ans).strip()
    s = s.replace("\n", " ").replace("\u2212", "-").replace("−", "-")
    s = s.replace("\\$", "")  # currency
    s = s.replace("$", "")
    s = _matrix_to_tuple(s)
    # Spacing commands and sizing: \! \, \; \: "\ " ~ \left \right \displaystyle
    s = re.sub(r"\\[!,;:> ]|\\q?quad", "", s)
    s = s.replace("~", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\s*", "", s)
    s = s.replace("\\displaystyle", "").replace("\\limits", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    # Degrees / percent / currency.
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = s.replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    # Units written as text after a number: "5.4 \text{ cents}", "15\mbox{ cm}^2", "\frac{270}7\text{ degrees}".
    s = re.sub(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .]*\}(?:\s*\^\s*\{?\d\}?)?\s*$", "", s)
    s = _strip_text_wrappers(s)
    # Ordinals: 12^{\mathrm{th}}, 12^{th}, 12th, 1st -> the number.
    s = re.sub(r"(?<=\d)\s*\^\s*\{?\s*(?:st|nd|rd|th)\s*\}?|(?<=\d)(?:st|nd|rd|th)\b", "", s)
    # Leading "x \in" (answer forms like "x \in [-2,7]"); a leading "x =" is handled in _equal
    # because "y = 2x+3" must stay an equation when the other side is one too.
    m = re.match(r"^\s*[a-zA-Z]\s*(?:\\in\b|\s+in\s)\s*(.+)$", s)
    if m:
        s = m.group(1)
    # Trailing unit words after a number: "12 square units", "5 cm^2".
    s = re.sub(r"(?<=[\d}])\s*" + _UNITS + r"(?:\s*\^\s*\{?\d\}?)?\s*\.?\s*$", "", s, flags=re.IGNORECASE)
    s = _fix_fracs(s)
    s = _fix_sqrt(s)
    s = re.sub(r"_\{(\w+)\}", r"_\1", s)  # 4210_{5} -> 4210_5
    # Mixed numbers: "137 \frac{1}{2}" -> \frac{275}{2} (only when that is the whole answer).
    m = re.fullmatch(r"\s*(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}\s*", s)
    if m and int(m.group(4)) != 0:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        s = f"{m.group(1)}\\frac{{{whole * den + num}}}{{{den}}}"
    s = re.sub(r"\s+", " ", s).strip()
    # A plain brace group around the whole answer is LaTeX grouping: "{2, 3, 5}" -> "2, 3, 5".
    if s.startswith("{") and (_braced(s, 0) or ("", -1))[1] == len(s):
        s = s[1:-1].strip()
    # Thousands separators, only when the whole answer is one such number: 10,080 / 11,111,111,100.
    if re.fullmatch(r"-?\d{1,3}(?:\s?,\s?\d{3})+(?:\.\d+)?", s):
        s = re.sub(r"\s?,\s?", "", s)
    # Plain-text numbers ("five", "twenty-one").
    low = s.lower()
    if re.fullmatch(r"[a-z]+(?:[- ][a-z]+)?", low) and all(w in _WORD_NUMBERS for w in re.split(r"[- ]", low)):
        parts = [_WORD_NUMBERS[w] for w in re.split(r"[- ]", low)]
        s = str(parts[0] * parts[1] if len(parts) == 2 and parts[1] in (100, 1000) else sum(parts))
    # Numbers: drop trailing ".0"/".000", leading "+", "0.5" <- ".5".
    s = re.sub(r"(?<![\d.])(\d+)\.0+(?![\d])", r"\1", s)
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    s = s.lstrip("+") if re.match(r"^\+\d", s) else s
    # Spaces carry no meaning after this point except between words.
    s = re.sub(r"(?<=[^a-zA-Z])\s+|\s+(?=[^a-zA-Z])", "", s)
    s = s.rstrip(".")
    return s.lower() if re.search(r"[a-zA-Z]{2,}", re.sub(r"\\[a-zA-Z]+", "", s)) else s


# --------------------------------------------------------------------------------------------
# A tiny expression evaluator (no eval): tokens -> recursive descent -> complex value
# --------------------------------------------------------------------------------------------


class _ParseError(Exception):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<ident>[a-zA-Z])|(?P<op>\*\*|[-+*/^(){}\[\]!,|]))"
)
_FUNCS = {
    "\\sin": cmath.sin, "\\cos": cmath.cos, "\\tan": cmath.tan,
    "\\cot": lambda z: 1 / cmath.tan(z), "\\sec": lambda z: 1 / cmath.cos(z),
    "\\csc": lambda z: 1 / cmath.sin(z), "\\arcsin": cmath.asin, "\\arccos": cmath.acos,
    "\\arctan": cmath.atan, "\\ln": cmath.log, "\\log": lambda z: cmath.log10(z),
    "\\exp": cmath.exp, "\\sinh": cmath.sinh, "\\cosh": cmath.cosh, "\\tanh": cmath.tanh,
}
_CONSTS = {"\\pi": math.pi, "\\infty": math.inf, "\\infinity": math.inf}
_NEUTRAL_CMDS = {"\\mathrm", "\\text", "\\mbox"}  # already stripped by normalize; listed for clarity


def _tokenize(s: str) -> list[tuple[str, str]]:
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    toks, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise _ParseError(f"unexpected {s[pos:pos + 10]!r}")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return toks


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|implicit) unary)* ;
    unary := ('-'|'+') unary | postfix ; postfix := atom ('^' exponent)? '!'* .
    Values are Python complex numbers; identifiers look up `env` (single letters; `i` is the
    imaginary unit unless bound, `e` is Euler's number unless bound)."""

    def __init__(self, toks, env):
        self.toks, self.i, self.env = toks, 0, env

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, val=None):
        tok = self.peek()
        if tok[0] is None or (val is not None and tok[1] != val):
            raise _ParseError(f"expected {val!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self):
        v = self.expr()
        if self.i != len(self.toks):
            raise _ParseError(f"trailing {self.peek()[1]!r}")
        return v

    def expr(self):
        v = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            r = self.term()
            v = v + r if op == "+" else v - r
        return v

    def _starts_atom(self):
        k, t = self.peek()
        if k in ("num", "ident"):
            return True
        if k == "cmd":
            return t in _CONSTS or t in _FUNCS or t in ("\\frac", "\\sqrt") or t in _NEUTRAL_CMDS
        return t in ("(", "{", "[")

    def term(self):
        v = self.unary()
        while True:
            t = self.peek()[1]
            if t in ("*", "/"):
                self.take()
                r = self.unary()
                v = v * r if t == "*" else v / r
            elif self._starts_atom():  # implicit multiplication: 2\pi, 3x, (a+1)(b+2)
                v = v * self.postfix()
            else:
                return v

    def unary(self):
        t = self.peek()[1]
        if t == "-":
            self.take()
            return -self.unary()
        if t == "+":
            self.take()
            return self.unary()
        return self.postfix()

    def postfix(self):
        v = self.atom()
        if self.peek()[1] in ("^", "**"):
            self.take()
            e = self.unary() if self.peek()[1] in ("-", "+") else self.postfix_exponent()
            v = _pow(v, e)
        while self.peek()[1] == "!":
            self.take()
            v = _factorial(v)
        return v

    def postfix_exponent(self):
        # x^23 in LaTeX is x^2 * 3; x^{23} is x^23. A bare multi-digit number after ^ is rare in
        # answers and usually means the whole number (written by a model), so accept it whole.
        v = self.atom()
        if self.peek()[1] in ("^", "**"):
            self.take()
            v = _pow(v, self.postfix_exponent())
        return v

    def group(self):
        k, t = self.peek()
        if t == "{":
            self.take("{")
            v = self.expr()
            self.take("}")
            return v
        return self.atom()

    def atom(self):
        k, t = self.peek()
        if k == "num":
            self.take()
            return complex(float(t))
        if k == "ident":
            self.take()
            if t in self.env:
                return self.env[t]
            if t == "i":
                return 1j
            if t == "e":
                return complex(math.e)
            raise _ParseError(f"unbound {t}")
        if k == "cmd":
            self.take()
            if t in _CONSTS:
                return complex(_CONSTS[t])
            if t == "\\frac":
                num = self.group()
                den = self.group()
                return num / den
            if t == "\\sqrt":
                if self.peek()[1] == "[":
                    self.take("[")
                    n = self.expr()
                    self.take("]")
                    return _pow(self.group(), 1 / n)
                return _pow(self.group(), 0.5)
            if t in _FUNCS:
                fn = _FUNCS[t]
                if self.peek()[1] in ("^",):  # \sin^2 x
                    self.take()
                    p = self.postfix_exponent()
                    return _pow(fn(self.postfix()), p)
                return fn(self.postfix())
            if t in _NEUTRAL_CMDS:
                return self.group()
            raise _ParseError(f"unknown command {t}")
        if t in ("(", "{", "["):
            close = {"(": ")", "{": "}", "[": "]"}[t]
            self.take()
            v = self.expr()
            self.take(close)
            return v
        if t == "|":
            self.take()
            v = self.expr()
            self.take("|")
            return complex(abs(v))
        raise _ParseError(f"unexpected {t!r}")


def _pow(a: complex, b: complex) -> complex:
    if abs(a) > 1e150 or abs(b) > 1e4:
        raise _ParseError("overflow")
    if b.imag == 0 and a.imag == 0 and a.real < 0 and float(b.real).is_integer():
        return complex(a.real ** int(b.real))  # exact sign for (-2)^3
    if a == 0:
        return complex(0.0) if b.real > 0 else complex(math.inf)
    # Real odd roots of negative reals: (-8)^(1/3) = -2, as a reader means it.
    if a.imag == 0 and a.real < 0 and b.imag == 0 and b.real != 0:
        inv = 1 / b.real
        if abs(inv - round(inv)) < 1e-12 and round(inv) % 2 == 1:
            return complex(-((-a.real) ** b.real))
    return a**b


def _factorial(v: complex) -> complex:
    if v.imag != 0 or v.real < 0 or not float(v.real).is_integer() or v.real > 170:
        raise _ParseError("bad factorial")
    return complex(math.factorial(int(v.real)))


_VAR_VALUES = [  # fixed pseudo-random substitutions for identity testing (seeded, reproducible)
    {c: complex(random.Random(1000 * k + ord(c)).uniform(0.3, 2.7)) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    for k in range(3)
]


def _free_vars(s: str) -> set[str]:
    return {t for k, t in _tokenize(s) if k == "ident" and t not in ("i", "e")}


def evaluate(expr: str, env: dict[str, complex] | None = None) -> complex | None:
    """Value of a normalized LaTeX/plain expression, or None when it cannot be parsed/evaluated."""
    try:
        return _Parser(_tokenize(expr), env or {}).parse()
    except (_ParseError, ZeroDivisionError, OverflowError, ValueError, TypeError):
        return None


def _close(a: complex, b: complex, rel: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    for x, y in ((a.real, b.real), (a.imag, b.imag)):
        if math.isinf(x) or math.isinf(y):
            if x != y:
                return False
            continue
        if math.isnan(x) or math.isnan(y):
            return False
        if not math.isclose(x, y, rel_tol=rel, abs_tol=abs_tol):
            return False
    return True


def numeric_equal(a: str, b: str) -> bool:
    """Equal as numbers (or as functions of their free variables, at 3 fixed points)."""
    try:
        names = _free_vars(a) | _free_vars(b)
    except _ParseError:
        return False
    if len(names) > 6:
        return False
    envs = [{n: vals[n] for n in names} for vals in _VAR_VALUES] if names else [{}]
    for env in envs:
        va, vb = evaluate(a, env), evaluate(b, env)
        if va is None or vb is None or not _close(va, vb):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Structure: tuples, intervals, sets, lists, \pm, matrices, equations
# --------------------------------------------------------------------------------------------


def _split_top(s: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside (), [], {}. (Interval brackets may be unbalanced: "(3,4]".)"""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _matrix_to_tuple(s: str) -> str:
    r"""\begin{pmatrix} a \\ b \end{pmatrix} -> (a,b); rows with & -> ((a,b),(c,d))."""
    def repl(m):
        rows = [r.strip() for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        cells = [[c.strip() for c in r.split("&")] for r in rows]
        if all(len(r) == 1 for r in cells):
            return "(" + ",".join(r[0] for r in cells) + ")"
        return "(" + ",".join("(" + ",".join(r) + ")" for r in cells) + ")"

    return re.sub(r"\\begin\{([pbv]?matrix|array)\}(?:\{[^}]*\})?(.*?)\\end\{\1\}", repl, s, flags=re.DOTALL)


def _outer_brackets(s: str) -> tuple[str, str, str] | None:
    """('(', inner, ']') if s is wrapped by one bracket pair spanning the whole string."""
    if len(s) < 2:
        return None
    if s.startswith("\\{") and s.endswith("\\}"):
        return "{", s[2:-2], "}"
    if s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None
    return s[0], s[1:-1], s[-1]


def _expand_pm(s: str) -> list[str]:
    r"""'1\pm\sqrt{2}' -> ['1+\sqrt{2}', '1-\sqrt{2}'] (one \pm only); other strings -> [s]."""
    if s.count("\\pm") == 1:
        return [s.replace("\\pm", "+"), s.replace("\\pm", "-")]
    if s.count("\\mp") == 1:
        return [s.replace("\\mp", "-"), s.replace("\\mp", "+")]
    return [s]


def _as_unordered(s: str) -> list[str] | None:
    r"""Elements of a set '\{a,b\}', a bare comma list 'a, b', or a '\pm' value; else None."""
    ob = _outer_brackets(s)
    if ob and ob[0] == "{":
        parts = _split_top(ob[1])
    elif ob is None and "=" not in s:
        parts = _split_top(s, ";") if len(_split_top(s, ";")) > 1 and "," not in s else _split_top(s)
    else:
        return None
    items = [x for p in parts for x in _expand_pm(p)]
    return items if len(items) > 1 or (ob and ob[0] == "{") else None


def _unordered_equal(xs: list[str], ys: list[str]) -> bool:
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if _equal(x, y):
                del left[j]
                break
        else:
            return False
    return True


def _equation_equal(a: str, b: str) -> bool:
    """Both 'lhs = rhs': equal when lhs-rhs of one is a nonzero constant multiple of the other's."""
    la, ra = a.split("=", 1)
    lb, rb = b.split("=", 1)
    if _equal(la, lb) and _equal(ra, rb):
        return True
    fa, fb = f"({la})-({ra})", f"({lb})-({rb})"
    try:
        names = _free_vars(fa) | _free_vars(fb)
    except _ParseError:
        return False
    if not names:
        return False
    ratio = None
    for vals in _VAR_VALUES:
        env = {n: vals[n] for n in names}
        va, vb = evaluate(fa, env), evaluate(fb, env)
        if va is None or vb is None or abs(vb) < 1e-12:
            return False
        r = va / vb
        if ratio is None:
            ratio = r
        elif not _close(r, ratio):
            return False
    return ratio is not None and abs(ratio) > 1e-12


# A label before the value: x=, x_1=, f(x)=, and named quantities |AB|=, AB=, A:B= (lower-cased by
# normalize when the answer has words).
_LEADING_VAR = re.compile(r"^(?:[a-zA-Z](?:_\w+)?(?:\([a-zA-Z]\))?|\|[A-Za-z]{1,3}\||[A-Za-z]{2,3}|[A-Za-z]:[A-Za-z])=(.+)$")


def _labelled(s: str) -> dict[str, str] | None:
    """'a_3=2,a_37=19' -> {'a_3': '2', 'a_37': '19'} when every element is 'name=value' with
    distinct names; else None."""
    vals = _labelled_values(s)
    if vals is None:
        return None
    sep = ";" if len(_split_top(s, ";")) > 1 else ","
    names = [p.split("=", 1)[0].strip() for p in _split_top(s, sep)]
    return dict(zip(names, vals)) if len(set(names)) == len(names) else None


def _labelled_values(s: str) -> list[str] | None:
    """'k=45,n=2' -> ['45', '2'] when every element of a (',' or ';') list is 'name=value'."""
    if s.count("=") < 2 or _outer_brackets(s):
        return None
    sep = ";" if len(_split_top(s, ";")) > 1 else ","
    parts = _split_top(s, sep)
    vals = []
    for p in parts:
        m = _LEADING_VAR.match(p.strip())
        if not m or "=" in m.group(1):
            return None
        vals.append(m.group(1))
    return vals if len(vals) > 1 else None


_NUM = r"(-?[^<>=]+?)"


def _inequality_interval(s: str) -> str | None:
    r"""'x>2' -> '(2,\infty)', 'x\leq-1' -> '(-\infty,-1]', '-2<x\leq7' -> '(-2,7]', also '2<x'; else None."""
    lt = r"(<|\\leq|\\le(?![a-z])|≤)"
    gt = r"(>|\\geq|\\ge(?![a-z])|≥)"
    v = r"[a-zA-Z]"
    m = re.fullmatch(_NUM + lt + v + lt + _NUM, s)
    if m:
        lo, o1, o2, hi = m.groups()
        return ("(" if o1 == "<" else "[") + f"{lo},{hi}" + (")" if o2 == "<" else "]")
    m = re.fullmatch(_NUM + gt + v + gt + _NUM, s)
    if m:
        hi, o1, o2, lo = m.groups()
        return ("(" if o2 == ">" else "[") + f"{lo},{hi}" + (")" if o1 == ">" else "]")
    m = re.fullmatch(v + "(" + lt[1:-1] + "|" + gt[1:-1] + ")" + _NUM, s)
    if m:
        op, val = m.group(1), m.group(2)
        if re.fullmatch(lt, op):
            return f"(-\\infty,{val}" + (")" if op == "<" else "]")
        return ("(" if op == ">" else "[") + f"{val},\\infty)"
    m = re.fullmatch(_NUM + "(" + lt[1:-1] + "|" + gt[1:-1] + ")" + v, s)
    if m:
        val, op = m.group(1), m.group(2)
        if re.fullmatch(lt, op):   # 2<x: x>2
            return ("(" if op == "<" else "[") + f"{val},\\infty)"
        return f"(-\\infty,{val}" + (")" if op == ">" else "]")
    return None


def _equal(a: str, b: str) -> bool:
    """Equivalence of two normalized answers (recursive on structure)."""
    if a == b:
        return True
    if not a or not b:
        return False
    # Equations: both sides equations -> proportional; only one -> drop a leading "x =" there.
    ea, eb = a.count("=") == 1, b.count("=") == 1
    if ea and eb:
        return _equation_equal(a, b)
    if ea != eb:
        m = _LEADING_VAR.match(a if ea else b)
        if not m:
            return False
        return _equal(m.group(1), b) if ea else _equal(a, m.group(1))
    # Labelled values "k=45,n=2" (or "k=45;n=2"): label by label when both are labelled, else
    # the values as a bare list.
    da, db = _labelled(a), _labelled(b)
    if da is not None and db is not None:
        return set(da) == set(db) and all(_equal(da[k], db[k]) for k in da)
    for side in (a, b):
        parts = _labelled_values(side)
        if parts is not None:
            return _equal(",".join(parts), b) if side is a else _equal(a, ",".join(parts))
    # Inequalities: "x>2" is the interval (2,\infty), "-2\leqx\leq7" is [-2,7].
    ia, ib = _inequality_interval(a), _inequality_interval(b)
    if ia is not None or ib is not None:
        return _equal(ia or a, ib or b) if (ia or a) != a or (ib or b) != b else False
    # Unions of intervals / sets: unordered parts.
    ua, ub = _split_top(a, "\\cup"), _split_top(b, "\\cup")
    if len(ua) > 1 or len(ub) > 1:
        return _unordered_equal(ua, ub)
    # Sets, bare lists and \pm values: unordered elements.
    la, lb = _as_unordered(a), _as_unordered(b)
    # A bare list against a tuple: the same elements in any order ("-2, 1" for "(1,-2)", as s1's
    # judge prompt has it: a model often lists the solutions of a system without the parentheses).
    for xs, this, other in ((la, a, b), (lb, b, a)):
        tup = _outer_brackets(other)
        if xs is not None and _outer_brackets(this) is None and tup and tup[0] == "(" and tup[2] == ")":
            elems = _split_top(tup[1])
            if len(elems) == len(xs) > 1:
                return _unordered_equal(xs, elems)
    if la is not None or lb is not None:
        return _unordered_equal(la or [a], lb or [b])
    # Tuples, intervals, vectors: ordered; an interval's bracket types must match.
    oa, ob = _outer_brackets(a), _outer_brackets(b)
    # Redundant grouping around a tuple: "((1,2))" (a matrix inside \left( \right)) == "(1,2)".
    if oa and oa[0] == "(" and oa[2] == ")" and _outer_brackets(oa[1].strip()) and len(_split_top(oa[1])) == 1:
        return _equal(oa[1].strip(), b)
    if ob and ob[0] == "(" and ob[2] == ")" and _outer_brackets(ob[1].strip()) and len(_split_top(ob[1])) == 1:
        return _equal(a, ob[1].strip())
    ca = _split_top(oa[1]) if oa else [a]
    cb = _split_top(ob[1]) if ob else [b]
    if len(ca) > 1 or len(cb) > 1:
        if len(ca) != len(cb):
            return False
        if len(ca) == 2 and (oa[0] != ob[0] or oa[2] != ob[2]):
            return False
        return all(_equal(x, y) for x, y in zip(ca, cb))
    if "_" in a or "_" in b:  # base-n numerals (204_5) compare as strings only ...
        # ... but the digits without the base are the same answer (s1's judge: "2516" for 2516_8)
        ma, mb = re.fullmatch(r"(\w+)_\w+", a), re.fullmatch(r"(\w+)_\w+", b)
        return bool((ma and not mb and ma.group(1) == b) or (mb and not ma and mb.group(1) == a))
    return numeric_equal(a, b)


_LEAD_IN = re.compile(
    r"^(?:\.\.\.|…)?\s*(?:(?:so|thus|hence|therefore|then)\s*,?\s*)?"
    r"(?:it|this|that|the\s+(?:final\s+)?answer|the\s+result|the\s+solution)\s+(?:is|was)\s+(?=[a-z])",
    re.IGNORECASE)


def _strip_lead_in(s: str) -> str:
    """ "...it is navin" -> "navin" (only a word answer after such a lead-in)."""
    m = _LEAD_IN.match(s)
    if m and re.fullmatch(r"[a-zA-Z ]+", s[m.end():].strip()):
        return s[m.end():].strip()
    return s


@lru_cache(maxsize=65536)
def math_equal(pred: str, reference: str) -> bool:
    """True when two math answers are equivalent (see module docstring)."""
    a, b = normalize(pred), normalize(reference)
    if len(a) > 400 or len(b) > 400:  # no real answer is this long: string equality only
        return a == b
    if a == b:
        return True
    # Multiple choice inside MATH (\text{(B)}): compare the letter.
    la, lb = re.fullmatch(r"\(?([a-e])\)?", a.lower()), re.fullmatch(r"\(?([a-e])\)?", b.lower())
    if la and lb:
        return la.group(1) == lb.group(1)
    # Words (names, "even", "east"): case-insensitive string equality only, after a lead-in
    # ("...it is navin." for \text{Navin}, as s1's judge prompt has it).
    a, b = _strip_lead_in(a), _strip_lead_in(b)
    if a == b:
        return True
    if re.fullmatch(r"[a-zA-Z ]{2,}", a) or re.fullmatch(r"[a-zA-Z ]{2,}", b):
        return a.lower().strip() == b.lower().strip()
    try:
        return _equal(a, b)
    except RecursionError:
        return False


def rule_index(options: list[str], attempt: str, kind: str = "math") -> int:
    """What s1's judge is asked, answered by the rules: the 1-based index of the first option the
    attempt (a whole attempt text, or an extracted answer) is equivalent to, else -1."""
    pred = extract_answer(attempt, kind)
    if pred is None:
        pred = answer_section(attempt).strip()
    for k, opt in enumerate(options):
        if grade(pred, opt, kind):
            return k + 1
    return -1


def parse_integer(s: str | None) -> int | None:
    """'025' -> 25, '1,000' -> 1000, '25.0' -> 25, '\\boxed{33}' -> 33; None if not an integer."""
    if s is None:
        return None
    t = normalize(s)
    t = t.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", t) else t
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    v = evaluate(t) if t else None
    if v is not None and v.imag == 0 and math.isfinite(v.real) and abs(v.real - round(v.real)) < 1e-9:
        return int(round(v.real))
    return None


def grade(pred: str | None, reference: str, kind: str = "math") -> bool:
    """Is `pred` (an extracted answer; None = no answer) correct for `reference`?"""
    _check_kind(kind)
    if pred is None:
        return False
    pred, reference = str(pred), str(reference)
    # A caller may pass unextracted "\boxed{..}" text on either side.
    pred = last_boxed(pred) if last_boxed(pred) is not None else pred
    reference = last_boxed(reference) if last_boxed(reference) is not None else reference
    if kind == "integer":
        a, b = parse_integer(pred), parse_integer(reference)
        if a is None:
            s = _integer_from_sentence(pred)
            a = parse_integer(s) if s is not None else None
        return a is not None and b is not None and a == b
    if kind == "choice":
        letter = pred.strip().strip("()").strip().upper()
        if len(letter) != 1:
            ref = reference.strip().strip("()").upper()
            letters = CHOICE_LETTERS if ref and ref not in DEFAULT_LETTERS else DEFAULT_LETTERS
            letter = _extract_letter(pred, letters) or ""
        return letter != "" and letter == reference.strip().strip("()").upper()
    return math_equal(pred, reference)
