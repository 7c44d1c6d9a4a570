"""A fake engine for the sweep tests: its behaviour is known exactly (answers right iff the budget
reaches a per-question need)."""
import dataclasses

from s1.infer.sampling import SamplingParams


@dataclasses.dataclass
class FakeOut:
    prompt: str
    thinking: str
    answer: str
    text: str
    output_token_ids: list
    num_thinking_tokens: int
    num_waits_used: int
    finish_reason: str
    max_thinking_tokens: int | None = None


class FakeLLM:
    """Question i needs `need[q]` thinking tokens; with a budget >= need it answers right, else 0.
    Without a cap it thinks `need` tokens (+100 per Wait); "auto" resolves to AUTO_CAP. Reports
    outputs through on_output in reverse order (completion order differs from prompt order) and
    records how often generate() is called."""

    AUTO_CAP = 1000

    def __init__(self, need: dict, answers: dict):
        self.need, self.answers, self.calls = need, answers, 0

    def generate(self, prompts, params, use_tqdm=True, on_output=None):
        self.calls += 1
        outs = []
        for q, p in zip(prompts, params):
            assert isinstance(p, SamplingParams)
            cap = self.AUTO_CAP if p.max_thinking_tokens == "auto" else p.max_thinking_tokens
            want = self.need[q] + 100 * p.num_wait
            used = want if cap is None else min(want, cap)
            ans = self.answers[q] if used >= self.need[q] else "0"
            answer = f"Final Answer: $\\boxed{{{ans}}}$"
            outs.append(FakeOut(q, "t" * used, answer, "t" * used + "\n<|im_start|>answer\n" + answer,
                                [1] * (used + 5), used, p.num_wait, "stop", cap))
        if on_output is not None:
            for i in reversed(range(len(outs))):
                on_output(i, outs[i])
        return outs
