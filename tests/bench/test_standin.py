"""The benchmarks' stand-in tokenizer (bench/standin.py): its Qwen2.5 ids are the real tokenizer's,
the byte-level one encodes any text, load_tokenizer falls back to the stand-in without the folder."""
from bench.standin import StandInTokenizer, load_tokenizer
from s1.model.tokenizer import ANSWER_DELIMITER, FORCED_END, Tokenizer


def test_qwen_ids_are_the_real_tokenizers(qwen_tokenizer_dir):
    real, stand = Tokenizer.from_pretrained(qwen_tokenizer_dir), StandInTokenizer.qwen()
    assert stand.vocab_size == real.vocab_size and (stand.eos_id, stand.pad_id) == (real.eos_id, real.pad_id)
    for name, tid in stand.specials.items():
        assert real.token_id(name) == tid, name
    for text in (ANSWER_DELIMITER, "Wait", "\n", FORCED_END, FORCED_END.lstrip("\n")):
        assert stand.encode(text) == real.encode(text), text
    table = real.newline_table()
    assert stand.newline_ids and all(table[i] for i in stand.newline_ids)
    assert stand.newline_table()[198] == 1 and len(stand.newline_table()) == stand.vocab_size


def test_byte_level_encodes_any_text():
    tok = StandInTokenizer.byte_level()
    ids = tok.encode("ab<|im_end|>\né")
    assert ids == [97, 98, 258, 10, 0xC3, 0xA9] and max(ids) < tok.vocab_size == 259
    assert tok.decode([104, 105, 258]) == "hi" and tok.token_id("<|im_start|>") == 257
    assert (tok.eos_id, tok.pad_id) == (258, 256) and tok.newline_table()[10] == 1


def test_load_tokenizer_falls_back_to_the_stand_in(monkeypatch, tmp_path, qwen_tokenizer_dir):
    monkeypatch.setenv("S1_SHARED_DATA", str(qwen_tokenizer_dir.parent))
    assert isinstance(load_tokenizer(), Tokenizer)
    monkeypatch.setenv("S1_SHARED_DATA", str(tmp_path))
    tok = load_tokenizer()
    assert isinstance(tok, StandInTokenizer) and tok.vocab_size == 151665
