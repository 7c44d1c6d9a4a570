"""Trainer data pipeline: loading, validation, labels/masking, truncation, packing, batch plan."""
import json

import pytest
import torch

from tests.train.helpers import digit_rows
from s1.train.data import (IGNORE_INDEX, BatchPlan, DataError, Example, collate, extract_fields, load_rows,
                        make_samples, pack_best_fit, shift_labels, tokenize_rows)


@pytest.fixture
def tok(qwen_tokenizer_dir):
    from s1.model.tokenizer import Tokenizer
    return Tokenizer.from_pretrained(qwen_tokenizer_dir)


# ----------------------------------------------------------------------------- validation
def test_bad_rows_name_the_row_and_problem():
    def drop(col):
        return lambda r: r.pop(col)

    def put(col, value):
        return lambda r: r.__setitem__(col, value)
    cases = [(3, drop("attempt"), r"row 3: missing column 'attempt' or 'deepseek_attempt'"),
             (2, put("thinking_trajectories", ["   "]), r"row 2: empty thinking trace in column 'thinking_trajectories'"),
             (4, drop("question"), r"row 4: missing column 'question'"),
             (1, put("attempt", 17), r"row 1: column 'attempt' must be a string")]
    rows = digit_rows(5)
    for row, spoil, message in cases:
        bad = [dict(r) for r in rows]
        spoil(bad[row])
        with pytest.raises(DataError, match=message):
            for i, r in enumerate(bad):
                extract_fields(r, i)


def test_null_column_is_reported_as_null_not_missing():
    """`attempt: null` names the row and says the value is null (the column is there)."""
    row = digit_rows(1)[0] | {"attempt": None}
    with pytest.raises(DataError, match=r"row 3: column 'attempt' \(final answer\) is null") as e:
        extract_fields(row, 3)
    assert "missing" not in str(e.value)
    with pytest.raises(DataError, match=r"row 0: column 'attempt' \(final answer\) is null"):
        extract_fields(row, 0, attempt_column="attempt")
    with pytest.raises(DataError, match=r"row 2: column 'question' is null"):
        extract_fields(digit_rows(1)[0] | {"question": None}, 2)
    # a null column with a filled alternative is no error: the alternative is used
    assert extract_fields(row | {"deepseek_attempt": "9"}, 0)[2] == "9"


def test_attempt_and_trace_are_stripped_as_s1_renders_them(tok):
    """s1's data preparation: `answer = "Answer: " + answer if "Answer:" not in answer else answer`,
    then `answer.strip()`; the trace is `"\\n".join(trajectory).strip()`. Our rendering of the
    stripped attempt equals s1's string for each case (leading whitespace survives after the
    prefix, as in s1)."""
    def s1_answer(a):
        return ("Answer: " + a if "Answer:" not in a else a).strip()

    for attempt in ("42\n\n", "  Answer: 7 \n", "The answer is $\\boxed{3}$.  ", "  x = 2\n", "Final Answer: 5\n"):
        row = {"question": "Q", "thinking_trajectories": ["  think\n"], "attempt": attempt}
        q, th, at = extract_fields(row, 0)
        assert th == "think"
        assert tok.format_attempt(at) == s1_answer(attempt), attempt
        text = tok.render_example(q, th, at)
        assert text.endswith(f"think\n<|im_start|>answer\n{s1_answer(attempt)}<|im_end|>\n")
    assert extract_fields({"question": "Q", "thinking_trajectories": " t \n", "attempt": "1"}, 0)[1] == "t"


def test_bad_row_error_through_tokenize(tok):
    rows = digit_rows(6)
    del rows[5]["thinking_trajectories"]
    with pytest.raises(DataError, match=r"row 5: missing column 'thinking_trajectories' or "
                                        r"'deepseek_thinking_trajectory'"):
        tokenize_rows(rows, tok, block_size=512)


def test_trace_list_joined_and_column_choice():
    row = {"question": "Q", "thinking_trajectories": ["a", "b "], "attempt": "x",
           "deepseek_thinking_trajectory": "deep", "deepseek_attempt": "y"}
    assert extract_fields(row, 0) == ("Q", "a\nb", "x")  # s1: "\n".join(...).strip()
    assert extract_fields(row, 0, "deepseek_thinking_trajectory", "deepseek_attempt") == ("Q", "deep", "y")
    only_ds = {"question": "Q", "deepseek_thinking_trajectory": "deep", "deepseek_attempt": "y"}
    assert extract_fields(only_ds, 0) == ("Q", "deep", "y")
    with pytest.raises(DataError, match="row 7: missing column 'nope'"):
        extract_fields(row, 7, thinking_column="nope")


def test_load_formats_agree(tmp_path):
    import datasets
    rows = digit_rows(7)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "diskdict"))
    for src in ("d.json", "d.jsonl", "d.parquet", "disk", "diskdict"):
        got = load_rows(tmp_path / src)
        assert [extract_fields(r, i) for i, r in enumerate(got)] == \
               [extract_fields(r, i) for i, r in enumerate(rows)], src
    with pytest.raises(DataError, match="no such file"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"question": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_rows(tmp_path / "bad.jsonl")


# ----------------------------------------------------------------------------- labels and masking
def test_labels_shift_and_mask_cover_exactly_the_assistant_part(tok):
    from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT
    rows = digit_rows(4)
    examples, stats = tokenize_rows(rows, tok, block_size=4096)
    assert stats.examples == 4 and stats.truncated == stats.dropped == 0
    for ex, row in zip(examples, rows):
        q, th, at = extract_fields(row, 0)
        # Independent reconstruction: prefix = system + user + "<|im_start|>assistant\n".
        prefix = tok.encode(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
                            f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
        body = tok.encode(f"<|im_start|>think\n{th}\n<|im_start|>answer\nAnswer: {at}<|im_end|>")
        assert ex.ids[:len(prefix)] == prefix
        assert ex.ids[len(prefix):len(prefix) + len(body)] == body
        assert ex.ids[len(prefix) + len(body):] == tok.encode("\n")  # trailing newline: trained, as s1
        # Every assistant token (and the final "\n") is a target exactly once; nothing else is.
        targets = [(t, y) for t, y in enumerate(ex.labels) if y != IGNORE_INDEX]
        assert [t + 1 for t, _ in targets] == list(range(len(prefix), len(prefix) + len(body) + 1))
        assert all(y == ex.ids[t + 1] for t, y in targets)
        assert ex.labels[-1] == IGNORE_INDEX and ex.n_trained == len(body) + 1
        assert ex.ids[targets[-2][0] + 1] == tok.token_id("<|im_end|>")


def test_trained_tokens_of_a_real_example_decode_to_the_completion_with_its_newline(tok):
    """A real problem (AIME 2024 #1, its official solution as the trace): the trained tokens decode
    to exactly the text after "<|im_start|>assistant\n", ending "<|im_end|>\n", as s1's
    completion-only collator trains it."""
    import json

    from tests.conftest import require_shared_data
    with open(require_shared_data() / "eval" / "aime24" / "test.jsonl") as f:
        row = json.loads(f.readline())
    rows = [{"question": row["problem"], "thinking_trajectories": [row["solution"]], "attempt": str(row["answer"])}]
    (ex,), _ = tokenize_rows(rows, tok, block_size=32768)
    trained = [y for y in ex.labels if y != IGNORE_INDEX]
    q, th, at = extract_fields(rows[0], 0)
    assert tok.decode(trained, skip_special_tokens=False) == (
        f"<|im_start|>think\n{th}\n<|im_start|>answer\nAnswer: {at}<|im_end|>\n")
    assert trained[-2:] == [tok.token_id("<|im_end|>"), 198]


def test_shift_labels_semantics():
    ids = [10, 11, 12, 13, 14]
    mask = [False, False, True, True, False]
    assert shift_labels(ids, mask) == [IGNORE_INDEX, 12, 13, IGNORE_INDEX, IGNORE_INDEX]


def test_truncate_and_drop_are_counted(tok):
    rows = digit_rows(6)
    full, _ = tokenize_rows(rows, tok, block_size=4096)
    lens = sorted(len(e) for e in full)
    block = lens[3]  # the two/three longest are over-long
    n_over = sum(1 for n in lens if n > block)
    tr, st = tokenize_rows(rows, tok, block_size=block, overlong="truncate")
    assert st.truncated == n_over and st.dropped == 0 and len(tr) == 6
    assert st.tokens_cut == sum(n - block for n in lens if n > block)
    assert all(len(e) <= block for e in tr)
    for e_tr, e_full in zip(tr, full):  # truncation keeps a prefix; the last kept token has no label
        assert e_tr.ids == e_full.ids[:len(e_tr)]
        assert e_tr.labels[:-1] == e_full.labels[:len(e_tr) - 1] and e_tr.labels[-1] == IGNORE_INDEX
    dr, sd = tokenize_rows(rows, tok, block_size=block, overlong="drop")
    assert sd.dropped == n_over and len(dr) == 6 - n_over and sd.truncated == 0
    assert "dropped" in sd.summary()
    # A block so small that no assistant token survives: dropped (nothing to learn) and counted.
    with pytest.raises(DataError, match="no usable examples"):
        tokenize_rows(rows, tok, block_size=8)


# ----------------------------------------------------------------------------- packing and plan
def test_best_fit_packing():
    bins = pack_best_fit([5, 4, 3, 3, 2, 1], 8)
    # BFD by hand: 5->A(3 left) 4->B(4) 3->A(0) 3->B(1) 2->C(6) 1->B(0)
    assert bins == [[0, 2], [1, 3, 5], [4]]
    import random
    rng = random.Random(1)
    lengths = [rng.randint(1, 100) for _ in range(200)]
    bins = pack_best_fit(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert len(bins) <= 1.25 * sum(lengths) / 128 + 2  # near the lower bound
    with pytest.raises(ValueError, match="block_size"):
        pack_best_fit([10], 5)


def _fake_examples(lengths):
    return [Example(list(range(1, n + 1)), [IGNORE_INDEX] + list(range(2, n + 1)), row=i)
            for i, n in enumerate(lengths)]


def test_collate_cu_seqlens():
    mb = collate(_fake_examples([3, 5, 2]))
    assert mb.cu_seqlens.tolist() == [0, 3, 8, 10] and mb.max_seqlen == 5
    assert mb.n_tokens == 10 and mb.n_trained == 2 + 4 + 1 and mb.input_ids.shape == (10,)


def test_batch_plan_deterministic_and_complete():
    ex = _fake_examples([4 + i for i in range(9)])
    samples = make_samples(ex, 64, pack=False)
    plans = [BatchPlan(ex, samples, global_batch_size=4, micro_batch_size=1, world_size=2, seed=7)
             for _ in range(2)]
    assert plans[0].steps_per_epoch == 3  # ceil(9 / 4): the last step holds 1 sample
    assert (plans[0].order(0) == plans[1].order(0)).all()
    assert not (plans[0].order(0) == plans[0].order(1)).all()
    other = BatchPlan(ex, samples, 4, 1, 2, seed=8)
    assert not (other.order(0) == plans[0].order(0)).all()
    p = plans[0]
    for epoch in range(2):
        seen = []
        for b in range(p.steps_per_epoch):
            per_rank = [p.micro_batches(epoch, b, r) for r in range(2)]
            assert len(per_rank[0]) == len(per_rank[1])  # FSDP collectives stay in lockstep
            for mbs in per_rank:
                for mb in mbs:
                    if mb.weight:
                        seen.append(tuple(mb.input_ids.tolist()))
            real = [mb for mbs in per_rank for mb in mbs if mb.weight]
            want = sum(p.examples[i].n_trained for s in p.step_samples(epoch, b) for i in p.samples[s])
            assert sum(mb.n_trained for mb in real) == want
        assert sorted(seen) == sorted(tuple(e.ids) for e in ex)  # every sample once per epoch
    last = [p.micro_batches(0, 2, r) for r in range(2)]
    assert [mb.weight for mb in last[0]] == [1.0] and [mb.weight for mb in last[1]] == [0.0]
    with pytest.raises(ValueError, match="multiple of micro batch"):
        BatchPlan(ex, samples, 6, 4, 1, 0)


def test_data_order_is_a_hash_permutation_with_stored_indices():
    """The epoch order is fixed by BLAKE2b, not by numpy's RNG stream: stored indices, and an
    independent recomputation with hashlib."""
    import hashlib

    from s1.train.data import hash_permutation
    assert hash_permutation(20, 42, 0).tolist() == [1, 16, 4, 11, 7, 13, 9, 3, 0, 2, 12, 19, 6, 18, 17, 14, 8, 15, 5, 10]
    assert hash_permutation(20, 42, 1).tolist() == [2, 11, 18, 8, 1, 5, 0, 6, 10, 7, 16, 13, 17, 14, 12, 3, 19, 15, 4, 9]
    assert hash_permutation(7, 3, 0).tolist() == [4, 5, 1, 2, 3, 6, 0]
    n, seed, epoch = 1000, 42, 4
    want = sorted(range(n), key=lambda i: hashlib.blake2b(f"s1-train:{seed}:{epoch}:{i}".encode(),
                                                           digest_size=8).digest())
    assert hash_permutation(n, seed, epoch).tolist() == want
    ex = _fake_examples([4] * 20)
    assert BatchPlan(ex, make_samples(ex, 64, False), 4, 1, 1, seed=42).step_samples(1, 0) == [2, 11, 18, 8]


def test_packed_micro_batch_never_attends_across_sequences():
    """Summed CE of a packed micro-batch == sum over the sequences run one at a time."""
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, torch_dtype="float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.init_weights(seed=0)
    g = torch.Generator().manual_seed(0)
    ex = [Example(torch.randint(0, 64, (n,), generator=g).tolist(), [], row=i) for i, n in enumerate((7, 12, 5))]
    for e in ex:
        e.labels = shift_labels(e.ids, [False] * 2 + [True] * (len(e.ids) - 2))
        e.n_trained = sum(1 for y in e.labels if y != IGNORE_INDEX)
    mb = collate(ex)
    packed = model(mb.input_ids, cu_seqlens=mb.cu_seqlens, max_seqlen=mb.max_seqlen, labels=mb.labels)
    single = sum(model(torch.tensor(e.ids), labels=torch.tensor(e.labels)) for e in ex)
    torch.testing.assert_close(packed, single, rtol=1e-6, atol=1e-5)


def test_s1k11_rows_in_the_think_template(think_tokenizer_dir):
    """s1K-1.1-style rows (deepseek_thinking_trajectory / deepseek_attempt) on a <think> tokenizer
    (R1-distill / Qwen3 stand-in): rendered "<think>\\n{thinking}\\n</think>\\n\\n{attempt}<|im_end|>\\n",
    the assistant part trained; `s1 train --thinking-format s1` keeps s1's template on the same tokenizer."""
    from s1.model import thinking
    from s1.model.tokenizer import Tokenizer
    from types import SimpleNamespace as Cfg

    from s1.train.loop import _tokenizer
    ttok = Tokenizer.from_pretrained(think_tokenizer_dir)
    rows = [{"question": "What is 2+3?", "deepseek_thinking_trajectory": "2 plus 3 is 5.",
             "deepseek_attempt": "The answer is $\\boxed{5}$."}]
    (ex,), _ = tokenize_rows(rows, ttok, block_size=4096)
    trained = [y for y in ex.labels if y != IGNORE_INDEX]
    assert ttok.decode(trained) == "<think>\n2 plus 3 is 5.\n</think>\n\nThe answer is $\\boxed{5}$.<|im_end|>\n"
    assert ttok.decode(ex.ids).startswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n<think>")
    assert _tokenizer(Cfg(tokenizer=think_tokenizer_dir, model=None, thinking_format="auto")).thinking_format.name == "think"
    forced = _tokenizer(Cfg(tokenizer=think_tokenizer_dir, model=None, thinking_format="s1"))
    assert forced.thinking_format == thinking.S1
    (ex1,), _ = tokenize_rows(rows, forced, block_size=4096)
    assert "<|im_start|>think\n2 plus 3 is 5.\n<|im_start|>answer\nAnswer: The answer" in forced.decode(ex1.ids)
