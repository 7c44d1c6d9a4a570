"""Test-time scaling methods compared in s1 (paper §5.2, Table 3; s1-reference §4), as prompt and
trace renderings shared by evaluation (evaluation/evaluate.py) and training-data variants
(curate/variants.py), so that a model fine-tuned on a variant sees at test time exactly the
prompt wording it was trained on.

Methods (names used by `s1 eval --methods`):
  budget_forcing  the bare question; the engine caps thinking at the budget (forced end) and may
                  replace early ends by "Wait" (infer/sampling.py). Control is 100% by construction.
  tcc             token-conditional control: the prompt states the budget in tokens,
                  TCC_TEMPLATE = "{question}\\n\\nThink for up to {n} tokens."; no engine cap.
  tcc+bf          the same prompt, plus budget forcing at the same N.
  scc             step-conditional control: the prompt states a number of steps,
                  SCC_TEMPLATE = "{question}\\n\\nThink for up to {n} steps."; a step is about
                  `step_tokens` thinking tokens (100 by default, as the issue asks), so budget N
                  becomes max(1, N // step_tokens) steps (0 steps for N = 0). No engine cap.
  scc+bf          the same prompt, plus budget forcing at N tokens.
  ccc             class-conditional control: two generic prompts (short / long thinking). The
                  wording follows our recollection of the s1 paper's appendix (the paper text is
                  not available offline to check it); see CCC_SHORT / CCC_LONG.
  rs              rejection sampling: the bare question at temperature 1 with no cap; resample
                  until the thinking fits the budget, at most `max_attempts` attempts.
  majority        parallel scaling: K samples (temperature 1 by default) at one budget; the
                  majority answer of the first k samples for k = 1, 2, 4, ..., K; compute = total
                  thinking tokens of the k samples (evaluation/metrics.py).

Trace variants (for fine-tuning a model on the conditional methods; curate/variants.py): the
thinking is cut into steps of about `step_tokens` tokens at whitespace, and every step is
preceded by a marker line, joined by newlines:
  tcc: "[{r} tokens left]\\n{step}"   r = N minus the thinking tokens before the marker
  scc: "[{s} steps left]\\n{step}"    s counts down from the prompt's step count
Markers are plain text: the engine treats <|im_start|> as the end of thinking, so the paper's
"<|im_start|>... left" style markers cannot be used inside our traces. "steps"/"tokens" stay
plural for every count (one fixed pattern is easier for a small model to learn).
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
DEFAULT_STEP_TOKENS = 100

# Every method `s1 eval --methods` accepts, in the order the comparison report lists them.
METHOD_NAMES = ("budget_forcing", "tcc", "tcc+bf", "scc", "scc+bf", "ccc", "rs", "majority")


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
