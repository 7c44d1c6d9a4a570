"""Per-request decoding settings: sampling and budget forcing (s1-reference §3).

Budget-forcing semantics (what infer/budget.py implements on device, token by token):
- Thinking tokens are everything after the prompt until thinking ends, inserted extension strings
  included. `max_thinking_tokens` caps their total; `min_thinking_tokens` is a floor.
- When the cap is reached the forced end sequence (`end_thinking`, tokenized) follows at once; if
  the cap falls in the middle of an extension string, the rest of the extension is dropped and
  the forced end sequence starts on the next token (so num_thinking_tokens == cap exactly).
- A model end-of-thinking token (<|im_start|>, <|im_end|> or <|endoftext|>) while thinking
  (<|endoftext|> too: s1's vLLM run stops there as well, Qwen's generation config lists it as EOS):
  * thinking tokens < min: end tokens are masked out of the distribution (never sampled); top-k /
    top-p then filter the renormalized distribution of the other tokens;
  * else with waits left: the token is replaced by the extension tokens (one wait used);
    an empty extension ("nothing") means the end token is masked out and a wait is counted;
  * else: the token is replaced by the answer delimiter `<|im_start|>answer\\n` and the answer
    phase starts (the output continues with exactly those tokens).
- The answer phase ends at <|im_end|>, <|endoftext|> (plus `stop` tokens) or after
  `max_answer_tokens` sampled answer tokens (forced tokens are not counted).
- `max_tokens` caps all output tokens (generated + forced) in every mode -> finish "length".

When is budget forcing on?  A question prompt (rendered with render_prompt) always starts in the
thinking phase. A raw prompt (raw=True string or token-id list) starts in the thinking phase iff
`thinking_rules_set()` (max_thinking_tokens is not None, min_thinking_tokens > 0 or num_wait > 0);
otherwise it is plain generation: stop at <|im_end|>/<|endoftext|> (unless ignore_eos) or
max_tokens, as in nano-vllm's benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_END_THINKING = "\n<|im_start|>answer\nFinal Answer:"


@dataclass
class SamplingParams:
    temperature: float = 0.0          # 0 -> greedy
    top_k: int = 0                    # 0 -> no top-k
    top_p: float = 1.0                # in (0, 1]
    seed: int | None = None           # None -> drawn at random per request
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int = 0
    num_wait: int = 0
    extension: str = "Wait"
    end_thinking: str = DEFAULT_END_THINKING
    max_answer_tokens: int | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()        # extra answer-phase stop tokens, by token name

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending field. Called on construction and by LLM.generate."""
        def bad(field, msg):
            raise ValueError(f"SamplingParams.{field}={getattr(self, field)!r}: {msg}")

        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            bad("temperature", "must be a number >= 0")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            bad("top_k", "must be an integer >= 0 (0 disables top-k)")
        if not isinstance(self.top_p, (int, float)) or not (0.0 < self.top_p <= 1.0):
            bad("top_p", "must lie in (0, 1]")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            bad("seed", "must be a non-negative integer or None")
        for f in ("max_thinking_tokens", "max_answer_tokens", "max_tokens"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 0):
                bad(f, "must be a non-negative integer or None")
        for f in ("min_thinking_tokens", "num_wait"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 0:
                bad(f, "must be a non-negative integer")
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            bad("min_thinking_tokens", f"exceeds max_thinking_tokens={self.max_thinking_tokens}")
        if self.max_tokens == 0:
            bad("max_tokens", "must be >= 1 when given")
        if not isinstance(self.extension, str):
            bad("extension", "must be a string")
        if not isinstance(self.end_thinking, str) or not self.end_thinking:
            bad("end_thinking", "must be a non-empty string")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "must be a tuple of token names")

    def thinking_rules_set(self) -> bool:
        return self.max_thinking_tokens is not None or self.min_thinking_tokens > 0 or self.num_wait > 0
