"""s1's answer judge: its prompts, reply parsing, a per-run cache, and two backends.

s1 graded every MATH answer that is not a bare digit string, and every GPQA answer that is not a
bare letter, by asking gpt-4o-mini (temperature 0.5, max_tokens 1024, one user message) with
these prompts (its lm-evaluation-harness fork, taken from openai/simple-evals):

- `EXTRACTION_TEMPLATE_IDX` (tasks/openai_math/utils.py): "return the index of the matching
  option starting from 1 ... or -1"; options are written `['opt1', 'opt2']` without escaping.
  tasks/aime/utils.py has the same prompt except one worked example (`12^{\\mathrm{th}}` among
  six options, answer 5): `AIME_EXTRACTION_TEMPLATE_IDX`.
- `GPQA_EXTRACTION_TEMPLATE` (tasks/gpqa/openai/utils.py): "extract which choice among A, B, C,
  D the student picked ... or -1", with the question rendered by `GPQA_QUERY_TEMPLATE_API`.

Backends (a `Judge` maps a list of prompts to a list of replies, batched, cached):
- `LocalJudge(model_dir)`: the prompt as one user turn through the checkpoint's chat template,
  greedy, on our engine (s1/infer); no API key.
- `OpenAIJudge(base_url, model)`: any OpenAI-compatible chat-completions endpoint, with the
  `openai` client (optional extra: `pip install -e .[judge]`); s1's own setting for an exact
  replication is `OpenAIJudge("https://api.openai.com/v1", "gpt-4o-mini", temperature=0.5)`.
Replies are cached per (judge, settings, prompt) in a JSONL file (a run folder's
`judge_cache.jsonl`), so a re-score asks only for prompts it has not seen.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading

EXTRACTION_TEMPLATE_IDX = r"""
Look at the following attempt by a student and extract the student's answer. If it is equivalent (ignoring trivial simplifications) to any of the provided options, return the index of that option starting from 1. Else, return -1.

Examples:

    Options: ['2x+4', '2x', '4x']
    Attempt: The answer is 3+2x.

-1
(the student's answer is not among the options)

    Options: ['72,000']
    Attempt: 72000 \text{ cents}.

1
(always give benefit of the doubt to units and ignore formatting which makes the 1st option match)

    Options: ['2/(-3)', '2/3']
    Attempt: -1 * 2/3

1
(the 1st option matches after trivial simplifications which are fine)

    Options: ['x=5']
    Attempt: 5

1

    Options: ['\dfrac{33}{100}']
    Attempt: 0.33

1

    Options: ['75^\circ']
    Attempt: ...various calculations and explanations...hence the answer is $\boxed{x in 75}$.

1

    Options: ['(1,-3)', '(1,-1)', '(1,0)', '(1,-2)']
    Attempt: -2, 1

4
(ignore whitespace and other formatting which makes the 4th option match)

    Options: ['-2,1']
    Attempt: 1, -2

1
(likely a problem where multiple solutions are possible thus ignore order)

    Options: ['12']
    Attempt: ...$\boxed{12^{\mathrm{th}}}$.

1

    Options: ['2516_8']
    Attempt: 2516

1
(give benefit of the doubt for different bases)

    Options: ['11\sqrt2']
    Attempt: 11\sqrt{2}

1

    Options: ['11,\! 111,\! 111,\! 100']
    Attempt: 11111111100

1

    Options: ['\text{Navin}']
    Attempt: ...it is navin.

1

---

YOUR TASK


Respond with only the index of the matching option starting from 1 or -1 if there is absolutely no reasonable match. Do not include a rationale.

    Options: %(expression1)s
    Attempt: %(expression2)s
""".strip()

AIME_EXTRACTION_TEMPLATE_IDX = EXTRACTION_TEMPLATE_IDX.replace(
    "    Options: ['12']\n    Attempt: ...$\\boxed{12^{\\mathrm{th}}}$.\n\n1\n",
    "    Options: ['11', '100', '50', '-5', '12', '10']\n    Attempt: ...$\\boxed{12^{\\mathrm{th}}}$.\n\n5\n")

GPQA_EXTRACTION_TEMPLATE = r"""
Look at the following question and an attempt by a student and extract which choice among A, B, C, D the student picked. If the student did not pick any choice, respond with "-1".

Examples:

    Question: ...
    Attempt: Answer: **A**

A

    Question: A) Dinosaur B) Elephant C) Cat D) Dog
    Attempt: ...The answer is therefore Elephant...

B

    Question: ...
    Attempt: Answer: None of the above

-1

    Question: ...
    Attempt: ...Answer: D), because...

D

    Question: ...
(A) 7 
(B) 8 
(C) 4 
(D) 10
    Attempt: 4

C

    Question: ...
    Attempt: ...\\boxed{C}...

C

---

YOUR TASK


Respond only with the capitalized alphabetic letter (without quotes) or -1. Do not include a rationale.

    Question: %(expression1)s
    Attempt: %(expression2)s
""".strip()

GPQA_QUERY_TEMPLATE_API = "{Question}\nAnswer Choices:\n(A) {choice1}\n(B) {choice2}\n(C) {choice3}\n(D) {choice4}"

# The worked examples of EXTRACTION_TEMPLATE_IDX: (options, attempt, s1's verdict: 1-based index or -1).
WORKED_EXAMPLES = [
    (["2x+4", "2x", "4x"], "The answer is 3+2x.", -1),
    (["72,000"], r"72000 \text{ cents}.", 1),
    (["2/(-3)", "2/3"], "-1 * 2/3", 1),
    (["x=5"], "5", 1),
    ([r"\dfrac{33}{100}"], "0.33", 1),
    ([r"75^\circ"], r"...various calculations and explanations...hence the answer is $\boxed{x in 75}$.", 1),
    (["(1,-3)", "(1,-1)", "(1,0)", "(1,-2)"], "-2, 1", 4),
    (["-2,1"], "1, -2", 1),
    (["12"], r"...$\boxed{12^{\mathrm{th}}}$.", 1),
    (["11", "100", "50", "-5", "12", "10"], r"...$\boxed{12^{\mathrm{th}}}$.", 5),   # the AIME variant
    (["2516_8"], "2516", 1),
    ([r"11\sqrt2"], r"11\sqrt{2}", 1),
    ([r"11,\! 111,\! 111,\! 100"], "11111111100", 1),
    ([r"\text{Navin}"], "...it is navin.", 1),
]


def options_string(options: list[str]) -> str:
    """s1's rendering of the options: `['a', 'b']`, no escaping (so `\\text{Evelyn}` stays as is)."""
    return "[" + ", ".join("'" + str(o) + "'" for o in options) + "]"


def index_prompt(options: str | list[str], attempt: str, task: str = "math") -> str:
    """EXTRACTION_TEMPLATE_IDX (task "aime": the AIME variant) for one attempt."""
    if not isinstance(options, str):
        options = options_string(options)
    template = AIME_EXTRACTION_TEMPLATE_IDX if task == "aime" else EXTRACTION_TEMPLATE_IDX
    return template % {"expression1": options, "expression2": attempt}


def gpqa_question(question: str, choices: list[str]) -> str:
    """The question as s1 showed it to the GPQA judge: `(A) ...` option lines.
    `question` may be our rendered prompt (its trailing `A) ...` lines are dropped)."""
    lines = question.splitlines()
    while lines and re.match(r"^[A-J]\) ", lines[-1]):
        lines.pop()
    stem = "\n".join(lines).rstrip()
    ch = (list(choices) + [""] * 4)[:4]
    return GPQA_QUERY_TEMPLATE_API.format(Question=stem, choice1=ch[0], choice2=ch[1], choice3=ch[2], choice4=ch[3])


def gpqa_prompt(question: str, choices: list[str], attempt: str) -> str:
    return GPQA_EXTRACTION_TEMPLATE % {"expression1": gpqa_question(question, choices), "expression2": attempt}


def parse_index(reply: str | None, n_options: int) -> int | None:
    """A reply to EXTRACTION_TEMPLATE_IDX -> 0-based option index, or None for -1, anything that
    is not a bare number, or an index out of range (s1 kept the answer unchanged then)."""
    if reply is None:
        return None
    r = reply.strip()
    if r == "-1" or not (r.isdigit() and r.isascii()):
        return None
    k = int(r) - 1
    return k if 0 <= k < n_options else None


def parse_letter(reply: str | None) -> str | None:
    """A reply to the GPQA prompt -> "A".."D", or None ("-1", or anything else: s1 then used "A")."""
    if reply is None:
        return None
    r = reply.strip()
    return r if r in ("A", "B", "C", "D") else None


class JudgeCache:
    """Replies by key in a JSONL file (one {"key", "reply"} per line, appended)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else os.fspath(path)
        self.replies: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path and os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                        self.replies[row["key"]] = row["reply"]
                    except (ValueError, KeyError, TypeError):
                        continue   # a torn last line of an interrupted run

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put_many(self, items: dict[str, str]) -> None:
        with self._lock:
            self.replies.update(items)
            if self.path and items:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                with open(self.path, "a") as f:
                    for k, v in items.items():
                        f.write(json.dumps({"key": k, "reply": v}) + "\n")


class Judge:
    """Maps prompts to replies: cached replies first, the rest in one batch (`complete`)."""

    name = "judge"

    def __init__(self, cache: JudgeCache | str | os.PathLike | None = None):
        self.cache = cache if isinstance(cache, JudgeCache) else JudgeCache(cache)
        self.asked = 0      # prompts sent to the backend
        self.hits = 0       # prompts answered without asking the backend

    def settings(self) -> dict:
        """What, besides the prompt, decides a reply (part of the cache key)."""
        return {"name": self.name}

    def key(self, prompt: str) -> str:
        blob = json.dumps({"settings": self.settings(), "prompt": prompt}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def complete(self, prompts: list[str]) -> list[str]:
        raise NotImplementedError

    def __call__(self, prompts: list[str]) -> list[str]:
        keys = [self.key(p) for p in prompts]
        todo: dict[str, str] = {}
        for k, p in zip(keys, prompts):
            if self.cache.get(k) is None and k not in todo:
                todo[k] = p
        self.hits += len(prompts) - len(todo)     # answered without asking (cached, or a repeat)
        if todo:
            replies = self.complete(list(todo.values()))
            if len(replies) != len(todo):
                raise RuntimeError(f"judge returned {len(replies)} replies for {len(todo)} prompts")
            self.asked += len(todo)
            self.cache.put_many({k: "" if r is None else str(r) for k, r in zip(todo, replies)})
        return [self.cache.get(k) for k in keys]


class LocalJudge(Judge):
    """The judge prompts as one user turn (the checkpoint's chat template), greedy, on our engine."""

    def __init__(self, model_dir: str, cache=None, device: str | None = None, max_tokens: int = 16,
                 llm=None, **engine_settings):
        super().__init__(cache)
        self.model_dir = os.fspath(model_dir)
        self.name = "local:" + os.path.abspath(self.model_dir)
        self.device, self.max_tokens = device, max_tokens
        self.engine_settings = engine_settings
        self._llm = llm

    def settings(self) -> dict:
        return {"name": self.name, "temperature": 0.0, "max_tokens": self.max_tokens}

    @property
    def llm(self):
        if self._llm is None:
            from s1.infer import LLM
            if self.device is None:
                import torch
                self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self._llm = LLM(self.model_dir, device=self.device, **self.engine_settings)
        return self._llm

    def complete(self, prompts: list[str]) -> list[str]:
        from s1.infer import SamplingParams

        tok = self.llm.tokenizer
        rendered = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
                    for p in prompts]
        outs = self.llm.generate(rendered, SamplingParams(temperature=0.0, max_tokens=self.max_tokens),
                                 raw=True, use_tqdm=False)
        return [re.sub(r"<\|[a-z_]+\|>", "", (o.answer or o.text or "")) for o in outs]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


class OpenAIJudge(Judge):
    """Any OpenAI-compatible chat-completions endpoint (s1's was gpt-4o-mini at temperature 0.5).
    `client`: an object with `.chat.completions.create(...)` (default: `openai.OpenAI`)."""

    def __init__(self, base_url: str | None, model: str, cache=None, api_key: str | None = None,
                 temperature: float = 0.5, max_tokens: int = 1024, concurrency: int = 8, client=None):
        super().__init__(cache)
        self.base_url, self.model = base_url, model
        self.name = f"openai:{model}@{base_url or 'api.openai.com'}"
        self.temperature, self.max_tokens, self.concurrency = temperature, max_tokens, max(1, concurrency)
        if client is None:
            try:
                import openai
            except ImportError as e:
                raise ImportError("--judge-url needs the openai client: pip install -e '.[judge]' "
                                  "(or pip install 'openai>=1.40')") from e
            client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY")
        self.client = client

    def settings(self) -> dict:
        return {"name": self.name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _one(self, prompt: str) -> str:
        resp = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}],
            temperature=self.temperature, max_tokens=self.max_tokens)
        return resp.choices[0].message.content or ""

    def complete(self, prompts: list[str]) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(self._one, prompts))


def make_judge(model: str | None = None, url: str | None = None, url_model: str | None = None,
               cache=None, **kw) -> Judge | None:
    """`--judge MODEL` (a local checkpoint) or `--judge-url URL [--judge-model NAME]`."""
    if model and url:
        raise ValueError("give --judge (a local checkpoint) or --judge-url (an endpoint), not both")
    if url:
        return OpenAIJudge(url, url_model or "gpt-4o-mini", cache=cache, **kw)
    if model:
        return LocalJudge(model, cache=cache, **kw)
    return None
