"""The stand-in tokenizer of the benchmarks (and of their tests): the engine's tokenizer interface
without tokenizer files, for runs whose prompts are raw token ids.

Not a benchmark script (`s1 bench` does not list it). It lives here, not in the library, because
only benchmarks need it (the library always has a real tokenizer next to a checkpoint), and because
bench/host_overhead.py --repo DIR drives the engine of another checkout with it: it must not come
from the library being measured.

    load_tokenizer()              # the real Qwen2.5 tokenizer of the shared data, else StandInTokenizer.qwen()
    StandInTokenizer.qwen()       # Qwen2.5's ids, for random-weight Qwen2.5-shaped models
    StandInTokenizer.byte_level() # bytes + 3 special tokens (vocabulary 259), for stub models
"""
from __future__ import annotations


class StandInTokenizer:
    """What the engine asks of a tokenizer: vocab_size, eos_id, pad_id, system_prompt, token_id
    (special tokens by name), encode / decode, newline_table (ids whose text ends with a newline),
    render_prompt (refused: prompts are token ids).

    `fixed` maps each encodable text to its ids (the strings budget forcing inserts, as the real
    tokenizer encodes them); without it every text is encoded byte by byte, special tokens by name.
    """

    system_prompt = None

    def __init__(self, vocab_size: int, specials: dict[str, int], eos: str, pad: str, newline_ids,
                 fixed: dict[str, list[int]] | None = None):
        self.vocab_size = vocab_size
        self.specials = dict(specials)
        self.eos_id, self.pad_id = self.specials[eos], self.specials[pad]
        self.newline_ids = frozenset(newline_ids)
        self.fixed = fixed

    @classmethod
    def qwen(cls) -> StandInTokenizer:
        """Qwen2.5's ids (tests/bench/test_standin.py checks them against the real tokenizer): the
        engine does the same work as with the real tokenizer when the folder is absent."""
        from s1.model.tokenizer import ANSWER_DELIMITER, FORCED_END
        fixed = {ANSWER_DELIMITER: [151644, 9217], "Wait": [14190], "\n": [198],
                 FORCED_END.lstrip("\n"): [151644, 9217, 198, 19357, 21806, 25],
                 FORCED_END: [198, 151644, 9217, 198, 19357, 21806, 25]}
        return cls(151665, {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645},
                   eos="<|im_end|>", pad="<|endoftext|>", newline_ids=(198, 271), fixed=fixed)

    @classmethod
    def byte_level(cls) -> StandInTokenizer:
        """Bytes 0-255 and <|endoftext|>, <|im_start|>, <|im_end|> as 256-258: any text encodes."""
        return cls(259, {"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258},
                   eos="<|im_end|>", pad="<|endoftext|>", newline_ids=(10,))

    @property
    def thinking_format(self):
        """s1's thinking format (s1/model/thinking.py), the one these ids are Qwen2.5's for; read
        only by engines that have thinking formats (another checkout's may not)."""
        from s1.model import thinking
        return thinking.S1

    def token_id(self, name: str) -> int:
        return self.specials[name]

    def encode(self, text: str) -> list[int]:
        if self.fixed is not None:
            if text not in self.fixed:
                raise KeyError(f"StandInTokenizer cannot encode {text!r}")
            return list(self.fixed[text])
        out, i = [], 0
        while i < len(text):
            for name, tid in self.specials.items():
                if text.startswith(name, i):
                    out.append(tid)
                    i += len(name)
                    break
            else:
                out.extend(text[i].encode())
                i += 1
        return out

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        if self.fixed is not None:
            return " ".join(map(str, ids))
        return bytes(i for i in ids if i < 256).decode("latin-1")

    def newline_table(self) -> bytes:
        return bytes(1 if i in self.newline_ids else 0 for i in range(self.vocab_size))

    def render_prompt(self, q, system=None):
        raise NotImplementedError("raw token-id prompts only")


def load_tokenizer():
    """The Qwen2.5 tokenizer of the shared data (s1.common.paths.shared_data_dir) when it is there,
    else the stand-in with its ids."""
    from s1.common.paths import shared_data_dir
    d = shared_data_dir() / "qwen2.5-tokenizer"
    if (d / "tokenizer.json").exists():
        from s1.model.tokenizer import Tokenizer
        return Tokenizer.from_pretrained(d)
    return StandInTokenizer.qwen()
