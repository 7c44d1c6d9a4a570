"""Per-request decoding settings: sampling and budget forcing, with s1's semantics token for token.

Budget forcing (the device applies it every step, s1/kernels/force_state.py; s1's evaluation loop,
lm-eval fork `vllm_causallms.py`, is the reference):
- A question prompt ends with "<|im_start|>think" (no newline): the model writes the newline and
  it counts as a thinking token. Thinking tokens are everything after the prompt until thinking
  ends, inserted extension tokens included.
- `max_thinking_tokens` caps their total (one cap over all extensions). At the cap the forced end
  `end_thinking` follows ("\\n<|im_start|>answer\\nFinal Answer:"; its leading "\\n" only when the
  thinking does not already end with a newline, as s1 does) and the model answers. A cap falling
  inside an extension cuts the extension there. "auto" = s1's cap for runs without a budget:
  context - longest prompt of the generate call - len("<|im_start|>answer\\nFinal Answer:") - 100.
- The thinking format (s1/model/thinking.py, the tokenizer's `thinking_format`) names the strings:
  s1's above, or `<think>` models' ("<think>\n" start, "</think>" end, forced end
  "\n</think>\n\n"); the rules below are the same for both.
- The model ending thinking (<|im_start|>, <|im_end|> or <|endoftext|>: s1's vLLM run stops on
  all three; <think> models: </think>, <|im_end|>, <|endoftext|>). <|endoftext|> (an
  end-of-sequence id that is not one of the format's stops) stays in the context, as vLLM keeps it
  in s1's loop, and counts as a thinking token; then the rules below go on as for the others
  ("Wait" or the delimiter follows it):
  * thinking tokens < `min_thinking_tokens`: the end tokens are masked out (never sampled); top-k
    / top-p then filter the renormalized distribution of the other tokens;
  * else with extensions left (`num_wait`): the end token is dropped and `extension`'s token ids
    follow ("Wait" -> one token); the first token generated after an extension may not be an end
    token (s1's vLLM min_tokens=1 on every round, the first round included: with num_wait > 0 the
    very first thinking token is never an end token either). An empty extension ("") drops the end
    token and inserts nothing;
  * else: the end token is replaced by "<|im_start|>answer" and the model continues the answer
    (normally with a newline).
- The answer ends at <|im_end|> or <|endoftext|> (plus `stop` tokens), is emitted, and is limited
  only by the context unless `max_answer_tokens` caps the sampled answer tokens.
- `max_tokens` caps all output tokens (generated + forced) in every mode; the context caps them
  too (prompt + output <= the engine's max_model_len) -> finish "length".

When is budget forcing on?  A question prompt (rendered by the tokenizer) always starts thinking. A
raw prompt (raw=True string or token-id list) starts thinking iff `thinking_rules_set()`
(max_thinking_tokens is not None, min_thinking_tokens > 0 or num_wait > 0); otherwise it is plain
generation: stop at <|im_end|>/<|endoftext|> (unless ignore_eos) or max_tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from s1.model.tokenizer import FORCED_END

DEFAULT_END_THINKING = FORCED_END   # s1's; SamplingParams.end_thinking=None takes the thinking format's
AUTO = "auto"
# Bounds (checked here, so by the Python API, the CLI and the server alike). Token counts (the
# thinking/answer/output caps, min_thinking_tokens), num_wait and top_k are at most MAX_COUNT, far
# beyond any context and well inside the device tables' int64 columns; seeds fit an int64 column.
MAX_COUNT = 2 ** 31 - 1
MAX_SEED = 2 ** 63 - 1
MAX_TEMPERATURE = 100.0
MAX_LOGPROBS = 20    # most alternatives per token (vLLM's default max_logprobs, OpenAI's top_logprobs)
GREEDY_EPS = 1e-5     # a temperature below this samples greedily (vLLM's _SAMPLING_EPS): 1/T stays finite


@dataclass
class SamplingParams:
    temperature: float = 0.0          # < GREEDY_EPS (1e-5) -> greedy
    top_k: int = 0                    # 0 -> no top-k
    top_p: float = 1.0                # in (0, 1]
    seed: int | None = None           # None -> drawn at random per request
    max_thinking_tokens: int | str | None = None   # int, "auto" or None (no cap)
    min_thinking_tokens: int = 0
    num_wait: int = 0
    extension: str = "Wait"
    end_thinking: str | None = None   # None: the thinking format's forced end (s1/model/thinking.py)
    thinking: bool = True             # False: a question is rendered as plain chat (no thinking phase)
    thinking_start: str | None = None  # None: the thinking format's start
    max_answer_tokens: int | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()        # extra answer-phase stop tokens, by token name
    logprobs: int | None = None       # None: off; k: each output token's log-probability + the top k

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending field. Called on construction and by the engine."""
        def bad(field, msg):
            raise ValueError(f"SamplingParams.{field}={getattr(self, field)!r}: {msg}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not is_num(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            bad("temperature", f"must be a finite number in [0, {MAX_TEMPERATURE:g}] "
                               f"(below {GREEDY_EPS:g}: greedy)")
        if not is_int(self.top_k) or not 0 <= self.top_k <= MAX_COUNT:
            bad("top_k", f"must be an integer in [0, {MAX_COUNT}] (0 disables top-k)")
        if not is_num(self.top_p) or not (0.0 < self.top_p <= 1.0):
            bad("top_p", "must be a finite number in (0, 1]")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            bad("seed", f"must be an integer in [0, {MAX_SEED}] or None")
        m = self.max_thinking_tokens
        if m is not None and m != AUTO and (not is_int(m) or not 0 <= m <= MAX_COUNT):
            bad("max_thinking_tokens", f'must be an integer in [0, {MAX_COUNT}], "auto" or None')
        for f in ("max_answer_tokens", "max_tokens"):
            v = getattr(self, f)
            if v is not None and (not is_int(v) or not 0 <= v <= MAX_COUNT):
                bad(f, f"must be an integer in [0, {MAX_COUNT}] or None")
        for f in ("min_thinking_tokens", "num_wait"):
            v = getattr(self, f)
            if not is_int(v) or not 0 <= v <= MAX_COUNT:
                bad(f, f"must be an integer in [0, {MAX_COUNT}]")
        if is_int(m) and self.min_thinking_tokens > m:
            bad("min_thinking_tokens", f"exceeds max_thinking_tokens={m}")
        if self.max_tokens == 0:
            bad("max_tokens", "must be >= 1 when given")
        if not isinstance(self.extension, str):
            bad("extension", "must be a string")
        if self.end_thinking is not None and (not isinstance(self.end_thinking, str) or not self.end_thinking):
            bad("end_thinking", "must be a non-empty string or None (the thinking format's)")
        if self.thinking_start is not None and (not isinstance(self.thinking_start, str) or not self.thinking_start):
            bad("thinking_start", "must be a non-empty string or None (the thinking format's)")
        if not isinstance(self.thinking, bool):
            bad("thinking", "must be true or false")
        if self.logprobs is not None and (not is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            bad("logprobs", f"must be an integer in [0, {MAX_LOGPROBS}] (alternatives per token) or None")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "must be a tuple of token names")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPS

    def thinking_rules_set(self) -> bool:
        return self.max_thinking_tokens is not None or self.min_thinking_tokens > 0 or self.num_wait > 0
