"""The synthetic reasoning task of `s1 demo`: running digit sum mod 10, plus its tokenizer and model.

Why this task (bench/NOTES.md, "Demo"): a tiny model trained from scratch
in minutes on 2 CPU cores must show test-time scaling, i.e. accuracy that rises with the thinking
budget. The answer (sum of up to 16 digits, mod 10) is hard to produce in one step but easy step by
step, and the thinking trace carries every intermediate result:

    question : "a3 b5 c1 d8\nAdd the digits modulo ten."     (letter = position marker a..p)
    thinking : "a3=3 b5=8 c1=9 d8=7"                          (each item restated, then the running sum)
    attempt  : "Final Answer: 7"

The tokenizer splits every item into a marker and a digit token ("a", "3", " b", "5", ...) and makes
each running sum one token ("=8"), so a trace of n digits is 3n thinking tokens plus the closing
newline; one word per step, so whitespace-cut steps (s1/curate/variants.py) never split a step. Each step then decomposes into the two operations a small transformer learns fastest
(measured: bench/NOTES.md, "Demo"): (1) restate the next item, a pure induction-head copy (the marker
follows from the previous marker; the digit is whatever follows that marker in the question: the
markers make the lookup unambiguous) and (2) add that digit to the sum three tokens back, a 10 x 10
table over embeddings shared by every position. A trace with marker and sum fused into one token
("a3 b8 c9 d7") did not learn in the demo's time budget: its 160 fused tokens each had to learn
their digit value separately, and the copy and the addition had to happen in one step.

Budget forcing with a cap of b thinking tokens stops the trace after b tokens and appends
"\n<|im_start|>answer\nFinal Answer:"; the attempt format is chosen so that this forced string is
exactly the prefix seen in training, and the model answers from the last running sum it has seen:
right when the trace was complete, a guess (~10%) otherwise. So accuracy rises from ~10% at budget
0 to ~100% once the budget covers the longest trace (3 x 16 + 1 tokens).

Rows follow the s1K schema (question, solution, cot_type, source_type, metadata,
thinking_trajectories [one string], attempt) so `curate` and `train` read them unchanged.
The question puts the digits first and the instruction last, and each item is one word, so
curate's word 8-gram decontamination only flags pool questions that share several items with an
eval question.

The tokenizer is a byte-level BPE trained on the rendered corpus (CHAT_TEMPLATE: no system turn)
with the special tokens <|endoftext|>, <|im_start|>, <|im_end|>, <|fim_pad|> (padding, as s1),
written in tokenizer.json format; it loads with model.tokenizer.Tokenizer.
"""
from __future__ import annotations

import json
import os
import string

import numpy as np

MAX_DIGITS = 16
MARKERS = string.ascii_lowercase[:MAX_DIGITS]      # a..p: one position marker per digit
INSTRUCTION = "Add the digits modulo ten."
SOURCE_TYPE = "synthetic/digit_sum_mod10"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_pad|>")
# Pre-tokenizer split (pieces BPE never merges across): newlines, item markers (" b" when a digit
# follows), digits ("5", " 7") and running sums ("=8"); the text between them and the special tokens
# is one piece, so BPE may merge whole fixed phrases ("Final Answer:", "Add the digits ")
# into few tokens: short sequences, fast training. Newlines being their own pieces makes the
# engine's inserted "<|im_start|>answer" and the forced end (s1/model/tokenizer.py FORCED_END)
# tokenize exactly as in the training examples.
DIGIT_SPLIT = r"<\|[a-z_]+\|>|\n| ?[a-p](?=[0-9])| ?=?[0-9]"
# The toy tokenizer's chat template (ChatML, as Qwen's, but without Qwen's default system turn: a
# system message only when one is given). The system prompt and its turn were ~10 of a quick
# example's 77 tokens, every one of them computed in every training step and every prefill
# (issue 25, bench/NOTES.md "Demo in three minutes"); the toy model never needs them.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ----------------------------------------------------------------------------- the task
def running_sums(digits: list[int]) -> list[int]:
    """[d0, d0+d1, ...] mod 10."""
    out, s = [], 0
    for d in digits:
        s = (s + d) % 10
        out.append(s)
    return out


def render_digits(values: list[int]) -> str:
    """[3, 5, 1] -> "a3 b5 c1" (marker letter + digit per position)."""
    return " ".join(f"{MARKERS[i]}{v}" for i, v in enumerate(values))


def render_trace(digits: list[int]) -> str:
    """[3, 5, 1] -> "a3=3 b5=8 c1=9" (each item restated, then the running sum mod 10)."""
    items = render_digits(digits).split(" ")
    return " ".join(f"{item}={s}" for item, s in zip(items, running_sums(digits)))


def make_row(digits: list[int]) -> dict:
    """One problem in s1K schema."""
    if not 1 <= len(digits) <= MAX_DIGITS or any(not (0 <= d <= 9) for d in digits):
        raise ValueError(f"digits must be 1..{MAX_DIGITS} values in 0..9, got {digits!r}")
    sums = running_sums(digits)
    answer = str(sums[-1])
    thinking = render_trace(digits)
    return {
        "question": f"{render_digits(digits)}\n{INSTRUCTION}",
        "solution": f"The running sums mod 10 are {' '.join(map(str, sums))}, so the answer is {answer}.",
        "answer": answer,
        "cot_type": "math",
        "source_type": SOURCE_TYPE,
        "metadata": json.dumps({"digits": "".join(map(str, digits)), "num_digits": len(digits)}),
        "thinking_trajectories": [thinking],
        "attempt": f"Final Answer: {answer}",
    }


def parse_question(question: str) -> list[int]:
    """Inverse of make_row's question text (used by tests and to check generated rows)."""
    body, _, tail = question.partition("\n")
    if tail != INSTRUCTION or not body:
        raise ValueError(f"not a digit-sum question: {question!r}")
    digits = []
    for i, item in enumerate(body.split(" ")):
        if len(item) != 2 or item[0] != MARKERS[i] or not item[1].isdigit():
            raise ValueError(f"bad item {item!r} at position {i} in {question!r}")
        digits.append(int(item[1]))
    return digits


def generate_pool(n: int, seed: int = 0, min_digits: int = 1, max_digits: int = MAX_DIGITS) -> list[dict]:
    """n problems; lengths uniform in [min_digits, max_digits], digits uniform (seeded numpy RNG).
    Short questions repeat (there are only 10 one-digit ones): curate's exact dedup removes them."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_digits <= max_digits <= MAX_DIGITS:
        raise ValueError(f"need 1 <= min_digits <= max_digits <= {MAX_DIGITS}, got {min_digits}, {max_digits}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_digits, max_digits + 1, size=n)
    return [make_row(rng.integers(0, 10, size=int(k)).tolist()) for k in lengths]



# ----------------------------------------------------------------------------- tokenizer
def corpus_texts(rows: list[dict], system: str | None = None) -> list[str]:
    """Rendered training examples (s1 format through CHAT_TEMPLATE: no system turn unless `system`
    is given) for BPE training."""
    from s1.model.tokenizer import FORCED_END, Tokenizer

    # The render methods are pure string formatting: an instance without a vocabulary suffices.
    t = Tokenizer.__new__(Tokenizer)
    t.chat_template, t.config = CHAT_TEMPLATE, {}
    render = t.render_example
    texts = [render(r["question"], "\n".join(r["thinking_trajectories"]).strip(), r["attempt"], system)
             for r in rows]
    # The forced end-of-thinking string of budget forcing, so it tokenizes the way training saw it.
    texts.append(FORCED_END)
    return texts


def build_tokenizer(rows: list[dict], out_dir: str, vocab_size: int = 1024, system: str | None = None) -> str:
    """Train a byte-level BPE on the rendered rows; write tokenizer.json + tokenizer_config.json.

    vocab_size counts the 256 byte symbols, the merges and the 4 special tokens; merges that the
    corpus does not support are simply not created (the real vocabulary may end up smaller).
    Raises ValueError if a marker, digit or running sum of the corpus is not a single token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} must be >= {256 + len(SPECIAL_TOKENS)} (bytes + specials)")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(DIGIT_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(rows, system), trainer=trainer)
    # items per question = words on its first line (variant rows of s1/curate/variants.py append their
    # instruction after it, so they count the same way)
    n_items = max((len(r["question"].split("\n", 1)[0].split(" ")) for r in rows), default=0)
    pieces = ([("" if i == 0 else " ") + MARKERS[i] for i in range(n_items)]
              + [f"{sp}{d}" for sp in ("", " ", "=") for d in range(10)])
    split = [x for x in pieces if len(tok.encode(x, add_special_tokens=False).ids) != 1]
    if split:
        raise ValueError(f"vocab_size={vocab_size} is too small: pieces {split[:5]} are not single tokens")
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|fim_pad|>", "bos_token": None,
                   "model_max_length": 512, "tokenizer_class": "Qwen2TokenizerFast",
                   "chat_template": CHAT_TEMPLATE}, f, indent=2)
    return out_dir


# ----------------------------------------------------------------------------- model config
def tiny_config(vocab_size: int, hidden_size: int = 96, num_layers: int = 3, num_heads: int = 4,
                num_kv_heads: int = 2, intermediate_size: int = 256, max_positions: int = 256) -> dict:
    """A Qwen2-architecture config (HF field names) for training from scratch on the demo task.

    The embedding table is padded to a multiple of 64 rows beyond the real vocabulary, as Qwen2.5
    does (the engine never samples the padded ids). RoPE theta 1e4: sequences are < 256 tokens.
    """
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": -(-vocab_size // 64) * 64, "hidden_size": hidden_size,
        "intermediate_size": intermediate_size, "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "torch_dtype": "float32", "hidden_act": "silu",
        "initializer_range": 0.02, "use_sliding_window": False,
    }
