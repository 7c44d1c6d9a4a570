"""s1's difficulty grader through the project's judge (s1.evaluation.judge): every attempt (the
students' and the teacher's) is judged against the full reference solution with s1's
`data/grading.txt` system prompt and a `## Problem / ## Attempt / ## Correct answer` user turn;
the reply's last line "Yes"/"No" is the verdict (s1.curate.s1rules.parse_verdict).

s1 asked Claude 3.5 Sonnet (max_tokens 8192, default temperature). Here:
- `LocalGrader(model_dir)`: system + user turn through the checkpoint's chat template, greedy, on
  our engine (`--judge CKPT`);
- `OpenAIGrader(url, model)`: any OpenAI-compatible chat endpoint (`--judge-url URL --judge-model
  NAME`; the `openai` client, optional extra).
Both reuse the judge's batching and per-prompt JSONL cache; the system prompt is part of the cache
key, so these replies never mix with the evaluation judge's.
"""
from __future__ import annotations

import hashlib
import re

from s1.curate.s1rules import GRADING_SYSTEM_PROMPT
from s1.evaluation.judge import LocalJudge, OpenAIJudge

GRADER_MAX_TOKENS = 8192     # s1's Claude call


def _system_key(system: str) -> str:
    return hashlib.sha256(system.encode()).hexdigest()[:16]


class LocalGrader(LocalJudge):
    def __init__(self, model_dir: str, cache=None, device: str | None = None, max_tokens: int = GRADER_MAX_TOKENS,
                 system: str = GRADING_SYSTEM_PROMPT, llm=None, **engine_settings):
        super().__init__(model_dir, cache=cache, device=device, max_tokens=max_tokens, llm=llm, **engine_settings)
        self.system = system

    def settings(self) -> dict:
        return {**super().settings(), "system": _system_key(self.system)}

    def render(self, prompt: str) -> str:
        return self.llm.tokenizer.apply_chat_template(
            [{"role": "system", "content": self.system}, {"role": "user", "content": prompt}], add_generation_prompt=True)

    def complete(self, prompts: list[str]) -> list[str]:
        from s1.infer import SamplingParams

        outs = self.llm.generate([self.render(p) for p in prompts],
                                 SamplingParams(temperature=0.0, max_tokens=self.max_tokens), raw=True, use_tqdm=False)
        return [re.sub(r"<\|[a-z_]+\|>", "", (o.answer or o.text or "")) for o in outs]


class OpenAIGrader(OpenAIJudge):
    def __init__(self, base_url: str | None, model: str, cache=None, system: str = GRADING_SYSTEM_PROMPT,
                 max_tokens: int = GRADER_MAX_TOKENS, temperature: float = 1.0, **kw):
        super().__init__(base_url, model, cache=cache, max_tokens=max_tokens, temperature=temperature, **kw)
        self.system = system

    def settings(self) -> dict:
        return {**super().settings(), "system": _system_key(self.system)}

    def _one(self, prompt: str) -> str:
        resp = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "system", "content": self.system}, {"role": "user", "content": prompt}],
            temperature=self.temperature, max_tokens=self.max_tokens)
        return resp.choices[0].message.content or ""


def make_grader(model: str | None = None, url: str | None = None, url_model: str | None = None, cache=None,
                device: str | None = None, max_tokens: int = GRADER_MAX_TOKENS, llm=None):
    if model and url:
        raise ValueError("give --judge (a local checkpoint) or --judge-url (an endpoint), not both")
    if url:
        return OpenAIGrader(url, url_model or "claude-3-5-sonnet-20241022", cache=cache, max_tokens=max_tokens)
    if model:
        return LocalGrader(model, cache=cache, device=device, max_tokens=max_tokens, llm=llm)
    return None
