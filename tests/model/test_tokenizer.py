"""The Qwen2.5 tokenizer and the s1 rendering."""
import pytest

from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer

SEP = "\n__ggml_vocab_test__\n"


@pytest.fixture(scope="module")
def tok(request):
    from tests.conftest import require_shared_data
    return Tokenizer.from_pretrained(require_shared_data() / "qwen2.5-tokenizer")


def test_reference_vectors(tok, qwen_tokenizer_dir):
    inputs = (qwen_tokenizer_dir / "vectors" / "inputs.txt").read_text(encoding="utf-8").split(SEP)
    expected = (qwen_tokenizer_dir / "vectors" / "expected_ids.txt").read_text().split("\n")
    assert len(inputs) == len(expected) == 47
    bad = [i for i, (s, e) in enumerate(zip(inputs, expected)) if tok.encode(s) != [int(x) for x in e.split()]]
    assert not bad, f"{len(bad)} of 47 vectors differ, first: {inputs[bad[0]]!r}"
    # decoding inverts encoding on every vector
    assert all(tok.decode(tok.encode(s)) == s for s in inputs)


def test_special_ids_resolved_by_name(tok):
    assert tok.token_id("<|im_start|>") == 151644
    assert tok.token_id("<|im_end|>") == tok.eos_id == 151645
    assert tok.token_id("<|endoftext|>") == tok.pad_id == 151643
    assert tok.token_id("<|fim_pad|>") == 151662
    assert tok.encode("think") == [26865] and tok.encode("Wait") == [14190] and tok.encode("\n") == [198]
    assert tok.vocab_size == 151665
    with pytest.raises(KeyError, match="not_a_token"):
        tok.token_id("<not_a_token>")


Q, THINK, ATT = "What is $1+1$?", "One plus one.\nThat is 2.", "$\\boxed{2}$"


def test_render_example_reference_string(tok):
    expected = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\nWhat is $1+1$?<|im_end|>\n"
                "<|im_start|>assistant\n<|im_start|>think\nOne plus one.\nThat is 2.\n<|im_start|>answer\n"
                "Answer: $\\boxed{2}$<|im_end|>\n")
    assert tok.render_example(Q, THINK, ATT) == expected
    # "Answer: " only when the attempt lacks it
    assert tok.render_example(Q, THINK, "Answer: 2").count("Answer:") == 1


def test_rendering_matches_official_chat_template(tok, qwen_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))
    assistant = f"<|im_start|>think\n{THINK}\n<|im_start|>answer\nAnswer: {ATT}"
    full = hf.apply_chat_template([{"role": "user", "content": Q}, {"role": "assistant", "content": assistant}],
                                  tokenize=False)
    assert tok.render_example(Q, THINK, ATT) == full
    prompt = hf.apply_chat_template([{"role": "user", "content": Q}], tokenize=False, add_generation_prompt=True)
    # s1's evaluation prompt ends at "think": the model writes the newline (a thinking token)
    assert tok.render_prompt(Q) == prompt + "<|im_start|>think"
    assert DEFAULT_SYSTEM_PROMPT in prompt


def test_loss_mask_covers_exactly_the_assistant_part(tok):
    ids, mask = tok.encode_example(Q, THINK, ATT)
    assert ids == tok.encode(tok.render_example(Q, THINK, ATT))
    trained = [i for i, m in zip(ids, mask) if m]
    masked_prefix = [i for i, m in zip(ids, mask) if not m]
    assert tok.decode(trained) == f"<|im_start|>think\n{THINK}\n<|im_start|>answer\nAnswer: {ATT}<|im_end|>"
    # the mask is one contiguous run: prompt (through "assistant\n") masked, final "\n" masked
    first, last = mask.index(True), len(mask) - 1 - mask[::-1].index(True)
    assert all(mask[first:last + 1]) and not any(mask[:first]) and not any(mask[last + 1:])
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert ids[last] == tok.eos_id and tok.decode(ids[last + 1:]) == "\n"
    assert len(masked_prefix) == first + 1
