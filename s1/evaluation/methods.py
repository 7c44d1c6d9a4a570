"""Prompt and trace renderings of the test-time scaling methods the s1 paper compares (its
Table 3), shared by evaluation (s1/evaluation/sweep.py, which holds the list of methods, METHODS) and
training-data variants (s1/curate/variants.py), so that a model fine-tuned on a variant sees at test
time exactly the prompt wording it was trained on.

Prompts:
  token-conditional (tcc)  TCC_TEMPLATE = "{question}\\n\\nThink for up to {n} tokens."
  step-conditional (scc)   SCC_TEMPLATE = "{question}\\n\\nThink for up to {n} steps."; a step is
                           about `step_tokens` thinking tokens (DEFAULT_STEP_TOKENS = 100, the
                           paper's 100 tokens per step), so budget N becomes max(1, N // step_tokens)
                           steps (0 steps for N = 0)
  class-conditional (ccc)  two generic prompts, CCC_SHORT / CCC_LONG (the wording follows our
                           recollection of the paper's appendix, not checked against its text)

Trace variants (for fine-tuning a model on the conditional methods; s1/curate/variants.py): the
thinking is cut into steps of about `step_tokens` tokens at whitespace, and every step is
preceded by a marker line, joined by newlines:
  tcc: "[{r} tokens left]\\n{step}"   r = N minus the thinking tokens before the marker
  scc: "[{s} steps left]\\n{step}"    s counts down from the prompt's step count
Markers are plain text here: under s1's own thinking format <|im_start|> ends thinking. s1's
released step-conditional model (simplescaling/step-conditional-control) writes
"<|im_start|>{n} steps left\n" markers (S1_STEP_MARKER) instead, and s1 evaluated it with thinking
start "<|im_start|>" and end of thinking "<|im_start|>0" (s1/model/thinking.py S1_STEPS; `s1 eval
--methods scc --scc-style s1 --budgets 16,32,...`, budgets in steps). `count_steps` counts the
steps of either marker style in a thinking text (s1's eval/compute_sample_stats.py counts
" steps left\n"). "steps"/"tokens" stay plural for every count (one fixed pattern is easier for a
small model to learn).
"""
from __future__ import annotations

import re

TCC_TEMPLATE = "{question}\n\nThink for up to {n} tokens."
SCC_TEMPLATE = "{question}\n\nThink for up to {n} steps."
CCC_TEMPLATE = "{question}\n\n{instruction}"
CCC_SHORT = ("Answer after a short amount of thinking. Do not spend excessive time double-checking "
             "your work.")
CCC_LONG = ("Answer after a long amount of thinking. If you feel like you are finished early, spend "
            "the extra time trying to double-check your work until you are absolutely sure that you "
            "have the correct answer.")
CCC_CLASSES = {"short": CCC_SHORT, "long": CCC_LONG}
TOKEN_MARKER = "[{n} tokens left]"
STEP_MARKER = "[{n} steps left]"
S1_STEP_MARKER = "<|im_start|>{n} steps left"     # s1's step-conditional model's own markers
_STEPS_LEFT = re.compile(r"(?:\[|<\|im_start\|>)?(\d+) steps left\]?\n")
DEFAULT_STEP_TOKENS = 100


def _check_n(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    return n


def render_tcc(question: str, n_tokens: int) -> str:
    """Token-conditional prompt: the question followed by the budget in tokens."""
    return TCC_TEMPLATE.format(question=question, n=_check_n(n_tokens, "token budget"))


def render_scc(question: str, n_steps: int) -> str:
    """Step-conditional prompt: the question followed by the number of steps."""
    return SCC_TEMPLATE.format(question=question, n=_check_n(n_steps, "step count"))


def render_ccc(question: str, cls: str) -> str:
    """Class-conditional prompt: cls is "short" or "long"."""
    if cls not in CCC_CLASSES:
        raise ValueError(f"class-conditional class must be 'short' or 'long', got {cls!r}")
    return CCC_TEMPLATE.format(question=question, instruction=CCC_CLASSES[cls])


def steps_for_budget(n_tokens: int, step_tokens: int = DEFAULT_STEP_TOKENS) -> int:
    """Budget in tokens -> steps stated in the scc prompt: max(1, N // step_tokens); 0 for N = 0."""
    _check_n(n_tokens, "token budget")
    if step_tokens < 1:
        raise ValueError(f"step_tokens must be >= 1, got {step_tokens}")
    return 0 if n_tokens == 0 else max(1, n_tokens // step_tokens)


# ----------------------------------------------------------------------------- traces
_WORD = re.compile(r"\s*\S+")


def split_steps(text: str, count_tokens, step_tokens: int) -> list[str]:
    """Cut `text` at whitespace into steps of >= step_tokens tokens each (the last may be shorter).

    count_tokens(str) -> int counts the tokens of one word (a word keeps its leading whitespace,
    so the sum over a step's words approximates the step's tokens; BPE never merges across the
    whitespace our tokenizers split on). Steps are returned stripped; empty text -> [].
    """
    if step_tokens < 1:
        raise ValueError(f"step_tokens must be >= 1, got {step_tokens}")
    steps, cur, n = [], [], 0
    for w in _WORD.findall(text):
        cur.append(w)
        n += count_tokens(w)
        if n >= step_tokens:
            steps.append("".join(cur).strip())
            cur, n = [], 0
    if cur:
        steps.append("".join(cur).strip())
    return [s for s in steps if s]


def render_step_trace(steps: list[str], n_steps: int) -> str:
    """scc trace: "[n steps left]\\nstep0\\n[n-1 steps left]\\nstep1 ..." (counts down from n_steps)."""
    if n_steps < len(steps):
        raise ValueError(f"{len(steps)} steps do not fit a countdown from {n_steps}")
    return "\n".join(f"{STEP_MARKER.format(n=n_steps - i)}\n{s}" for i, s in enumerate(steps))


def render_token_trace(steps: list[str], n_tokens: int, count_tokens) -> str:
    """tcc trace: "[r tokens left]\\nstep0\\n[r' tokens left]\\nstep1 ...", r = n_tokens minus the
    tokens (count_tokens of each line, plus one per joining newline) written before the marker.
    Remaining counts never go below 0."""
    lines, used = [], 0
    for s in steps:
        marker = TOKEN_MARKER.format(n=max(0, n_tokens - used))
        lines += [marker, s]
        used += count_tokens(marker) + count_tokens(s) + 2  # the two newlines after marker and step
    return "\n".join(lines)


def count_steps(thinking: str) -> int:
    """Step markers ("[n steps left]" or s1's "<|im_start|>n steps left", each ending its line) in
    a thinking text; a marker for 0 steps left is not a step."""
    return sum(1 for m in _STEPS_LEFT.finditer(thinking) if int(m.group(1)) > 0)
