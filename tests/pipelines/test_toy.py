"""The synthetic task of `s1 demo` (s1/pipelines/toy.py): generator, tokenizer, tiny model config."""
import json

import pytest

from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer
from s1.pipelines import toy as synthetic

# ----------------------------------------------------------------------------- generator
def test_generator_rows_and_traces_are_correct():
    rows = synthetic.generate_pool(300, seed=3)
    keys = {"question", "solution", "cot_type", "source_type", "metadata", "thinking_trajectories", "attempt", "answer"}
    lengths = set()
    for r in rows:
        assert keys <= set(r)
        digits = synthetic.parse_question(r["question"])
        meta = json.loads(r["metadata"])
        assert meta["digits"] == "".join(map(str, digits)) and meta["num_digits"] == len(digits)
        lengths.add(len(digits))
        # independent recomputation: prefix sums with Python's sum, then mod 10
        expect = [sum(digits[:i + 1]) % 10 for i in range(len(digits))]
        assert isinstance(r["thinking_trajectories"], list) and len(r["thinking_trajectories"]) == 1
        # one word per step: the question item restated, then the running sum: "a3=3 b5=8 ..."
        steps = [w.split("=") for w in r["thinking_trajectories"][0].split(" ")]
        assert [s[0] for s in steps] == r["question"].split("\n")[0].split(" ")
        assert [int(s[1]) for s in steps] == expect
        assert r["answer"] == str(sum(digits) % 10)
        assert r["attempt"] == f"Final Answer: {r['answer']}"
    assert lengths == set(range(1, 17))  # 300 draws cover every length 1..16


def test_generator_seeded_and_validates():
    assert synthetic.generate_pool(20, seed=1) == synthetic.generate_pool(20, seed=1)
    assert synthetic.generate_pool(20, seed=1) != synthetic.generate_pool(20, seed=2)
    assert max(len(synthetic.parse_question(r["question"])) for r in synthetic.generate_pool(50, 0, max_digits=4)) <= 4
    with pytest.raises(ValueError, match="max_digits"):
        synthetic.generate_pool(5, max_digits=17)
    with pytest.raises(ValueError, match="digits"):
        synthetic.make_row([])
    with pytest.raises(ValueError, match="digits"):
        synthetic.make_row([1, 12])
    with pytest.raises(ValueError, match="not a digit-sum question"):
        synthetic.parse_question("What is 2+2?")


# ----------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def demo_tok(tmp_path_factory):
    rows = synthetic.generate_pool(1500, seed=0)
    d = tmp_path_factory.mktemp("tok")
    synthetic.build_tokenizer(rows, str(d))
    return Tokenizer.from_pretrained(d), rows


def test_tokenizer_special_ids_and_round_trip(demo_tok):
    tok, rows = demo_tok
    ids = {n: tok.token_id(n) for n in synthetic.SPECIAL_TOKENS}
    assert len(set(ids.values())) == 4 and all(0 <= i < tok.vocab_size for i in ids.values())
    assert tok.eos_id == ids["<|im_end|>"] and tok.pad_id == ids["<|fim_pad|>"]
    with pytest.raises(KeyError):
        tok.token_id("<|no_such_token|>")
    for r in rows[:50] + [synthetic.make_row([9] * 16)]:
        text = tok.render_example(r["question"], r["thinking_trajectories"][0], r["attempt"])
        # the toy template: no system turn (issue 25: ~10 tokens of every example)
        assert text.startswith("<|im_start|>user\n") and DEFAULT_SYSTEM_PROMPT not in text
        assert tok.decode(tok.encode(text)) == text
        # specials are single tokens, never split into bytes
        assert tok.encode(text).count(ids["<|im_start|>"]) == text.count("<|im_start|>")
    for s in ["hello world", "Unseen text: 12345 ~!@", "ünïcode ✓"]:
        assert tok.decode(tok.encode(s)) == s   # byte-level: any text round-trips


def test_tokenizer_three_tokens_per_step_and_consistent_forcing(demo_tok):
    tok, _ = demo_tok
    row = synthetic.make_row([3, 5, 1, 8, 0, 9])
    thinking = row["thinking_trajectories"][0]
    ids, mask = tok.encode_example(row["question"], thinking, row["attempt"])
    # thinking = marker, digit, running sum per step (+ the newline before the answer delimiter)
    think_ids = tok.encode(thinking)
    assert [tok.decode([i]) for i in think_ids] == ["a", "3", "=3", " b", "5", "=8", " c", "1", "=9",
                                                   " d", "8", "=7", " e", "0", "=7", " f", "9", "=6"]
    # the question's items use the very same marker and digit tokens (what the copy step looks up)
    q_ids = tok.encode(row["question"].split("\n")[0])
    assert q_ids == [t for i, t in enumerate(think_ids) if i % 3 != 2]
    # the engine's forced end of thinking and its answer delimiter appear verbatim in training ids
    def contains(seq, sub):
        return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))
    assert contains(ids, tok.encode("\n<|im_start|>answer\nFinal Answer:"))
    assert contains(ids, tok.encode("<|im_start|>answer\n"))
    assert contains(ids, think_ids + tok.encode("\n<|im_start|>answer\nFinal Answer:"))
    # loss mask: the assistant part only (thinking + answer), the question is masked
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == f"<|im_start|>think\n{thinking}\n<|im_start|>answer\nFinal Answer: 6<|im_end|>"


def test_tiny_config_pads_vocab():
    from s1.model.config import Qwen2Config
    cfg = Qwen2Config.from_dict(synthetic.tiny_config(558))
    assert cfg.vocab_size == 576 and cfg.vocab_size % 64 == 0 and cfg.num_hidden_layers == 3


# ----------------------------------------------------------------------------- train_tiny
def test_train_tiny_retrains_in_the_same_folder(tmp_path):
    """A pipeline re-made into its folder (`s1 demo` run twice with the same --out) retrains its
    model there: the trainer refuses a used --out unless told, and train_tiny tells it."""
    from s1.pipelines.tiny import train_tiny
    rows = synthetic.generate_pool(200, seed=0)
    tok = Tokenizer.from_pretrained(synthetic.build_tokenizer(rows, str(tmp_path / "tok")))
    settings = {"steps": 2, "batch": 8, "lr": 1e-3, "hidden": 32, "layers": 1, "heads": 2, "kv": 1, "inter": 64,
                "progress": False}
    first_dir, first = train_tiny(rows, tok, tmp_path / "model", settings)
    again_dir, again = train_tiny(rows, tok, tmp_path / "model", settings)
    assert again_dir == first_dir and again["steps"] == first["steps"] == 2
    assert (again_dir / "model.safetensors").is_file()
