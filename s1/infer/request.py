"""Host-side state of one request (a "sequence" in nano-vllm's terms) and what the engine returns.

The scheduler is the only writer of a Sequence's state (status, queues, tokens, counters, finish):
it applies each step's device result (`Scheduler.postprocess`). The block manager writes only the
page list.
"""
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
    Slotted: every decode step reads and writes a few fields of every running sequence, and
    fields stored in the object itself (no per-instance dict) are fewer memory reads each.
    """
    __slots__ = ("request_id", "prompt_ids", "output_ids", "num_tokens", "page_size", "status", "block_table",
                 "num_cached_tokens", "slot", "rules", "prompt_text", "max_thinking_tokens", "finish_reason",
                 "num_thinking_tokens", "num_waits_used", "answer_start", "num_preemptions", "stream", "error",
                 "_due_at", "_admission", "logprobs", "output_logprobs")

    def __init__(self, request_id, prompt_ids: list[int], page_size: int, rules=None,
                 prompt_text: str = "", max_thinking_tokens: int | None = None, starts_in_answer: bool = False,
                 stream: bool = True, logprobs: int | None = None):
        self.request_id = request_id
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.num_tokens = len(prompt_ids)
        self.page_size = page_size
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_cached_tokens = 0        # tokens whose KV came from the prefix cache this prefill
        self.slot: int | None = None      # row of the device budget-forcing tables while admitted
        self.rules = rules                # s1.infer.budget.RequestRules
        self.prompt_text = prompt_text
        self.max_thinking_tokens = max_thinking_tokens   # the cap applied ("auto" resolved)
        self.finish_reason: str | None = None
        self.num_thinking_tokens = 0
        self.num_waits_used = 0
        # index into output_ids where the answer begins (0: the rules start in the answer phase)
        self.answer_start: int | None = 0 if starts_in_answer else None
        self.num_preemptions = 0
        self.stream = stream              # report every new token (else only the finished request)
        self.error: str | None = None     # the message when finish_reason == "error"
        self._due_at = -1                 # the scheduler's next look at it (decode step number)
        self._admission = -1              # the scheduler's admission counter (running order)
        # None: no log-probabilities; k: one (logprob, top-k ids, top-k logprobs) per output token
        self.logprobs = logprobs
        self.output_logprobs: list[tuple] = []

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_known_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_blocks(self) -> int:
        return (self.num_tokens + self.page_size - 1) // self.page_size

    @property
    def is_finished(self) -> bool:
        return self.status == Status.FINISHED

    def __repr__(self):
        return (f"Sequence(id={self.request_id}, status={self.status.name}, tokens={self.num_tokens}, "
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
    finish_reason: str                    # "stop" | "length" | "abort" | "error"
    prompt_token_ids: list[int] = field(default_factory=list)
    error: str | None = None              # the message when finish_reason == "error"
    num_preemptions: int = 0
    max_thinking_tokens: int | None = None   # the thinking cap applied ("auto" resolved); None: none
    request_id: object = None
    # per output token (logprobs asked): (its log-probability, top ids, their log-probabilities)
    logprobs: list | None = None

    def to_dict(self) -> dict:
        return dict(prompt=self.prompt, thinking=self.thinking, answer=self.answer, text=self.text,
                    output_token_ids=self.output_token_ids, num_thinking_tokens=self.num_thinking_tokens,
                    num_waits_used=self.num_waits_used, finish_reason=self.finish_reason,
                    max_thinking_tokens=self.max_thinking_tokens,
                    **({"error": self.error} if self.error else {}))


@dataclass
class RequestOutput:
    """What one engine step produced for one request (streaming): the tokens new since the last
    report, and the final output once the request has finished."""
    request_id: object
    new_token_ids: list[int]
    num_output_tokens: int
    num_thinking_tokens: int
    answer_start: int | None              # index into the output where the answer text starts
    finished: bool
    output: GenerationOutput | None = None
    new_logprobs: list | None = None      # one entry per new token (logprobs asked), as GenerationOutput
