"""Host-side state of one request (a "sequence" in nano-vllm's terms) and its output record."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


class Sequence:
    """One request. `num_tokens` counts prompt + every output token already *scheduled*; with the
    asynchronous output path the last one's value may still be on the device (then
    len(token_ids) == num_tokens - 1). KV exists for the first `num_tokens - 1` tokens while running.
    """

    def __init__(self, req_id: int, prompt_ids: list[int], page_size: int):
        self.req_id = req_id              # row of this request in the device budget state
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.num_tokens = len(prompt_ids)
        self.page_size = page_size
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_cached_tokens = 0        # tokens whose KV came from the prefix cache this prefill
        self.finish_reason: str | None = None
        self.num_thinking_tokens = 0
        self.num_waits_used = 0
        self.num_preemptions = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_known_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_blocks(self) -> int:
        return (self.num_tokens + self.page_size - 1) // self.page_size

    def block_tokens(self, i: int) -> list[int]:
        ps = self.page_size
        return self.token_ids[i * ps:(i + 1) * ps]

    def __repr__(self):
        return (f"Sequence(req={self.req_id}, status={self.status.name}, tokens={self.num_tokens}, "
                f"blocks={self.block_table})")


@dataclass
class GenerationOutput:
    prompt: str
    thinking: str
    answer: str
    text: str
    output_token_ids: list[int]
    num_thinking_tokens: int
    num_waits_used: int
    finish_reason: str                    # "stop" | "length" | "error"
    prompt_token_ids: list[int] = field(default_factory=list)
    error: str | None = None              # the message when finish_reason == "error"
    num_preemptions: int = 0

    def to_dict(self) -> dict:
        return dict(prompt=self.prompt, thinking=self.thinking, answer=self.answer, text=self.text,
                    output_token_ids=self.output_token_ids, num_thinking_tokens=self.num_thinking_tokens,
                    num_waits_used=self.num_waits_used, finish_reason=self.finish_reason,
                    **({"error": self.error} if self.error else {}))
