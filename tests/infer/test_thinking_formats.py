"""The engine under the thinking formats of s1/model/thinking.py, end to end with a model that
writes a planned token sequence: s1's step-conditional run (thinking start "<|im_start|>", thinking
ends at the two tokens "<|im_start|>0", the model's own "<|im_start|>N steps left" markers) and
Qwen3's enable_thinking=False (plain generation) on the <think> stand-in tokenizer. The budget
forcing rules of the <think> format are checked token for token in tests/infer/test_s1_emulation.py."""
from __future__ import annotations

import pytest

from s1.evaluation import methods
from s1.model import thinking
from s1.model.tokenizer import Tokenizer
from tests.helpers import PlanModel


def _llm(model, tok):
    from s1 import kernels
    from s1.infer import LLM
    with kernels.use_backend("torch"):
        return LLM(model=model, tokenizer=tok, device="cpu", page_size=16, kernels="torch", num_pages=32,
                   max_num_seqs=4)


@pytest.fixture(scope="module")
def s1tok():
    from tests.conftest import require_shared_data
    return Tokenizer.from_pretrained(require_shared_data() / "qwen2.5-tokenizer")


def test_s1_step_conditional_run(s1tok):
    """s1's "step-conditional control + budget forcing": the prompt ends with "<|im_start|>", the
    model writes "N steps left" after each <|im_start|>; "<|im_start|>0" ends thinking and becomes
    "<|im_start|>answer" (the <|im_start|> is already out: only "answer" is written)."""
    from s1.infer import SamplingParams
    tok = Tokenizer.from_pretrained(s1tok.path)
    tok.thinking_format = thinking.S1_STEPS
    q = methods.render_scc("What is 2+2?", 2)
    prompt = tok.render_prompt(q)
    assert prompt.endswith("Think for up to 2 steps.<|im_end|>\n<|im_start|>assistant\n<|im_start|>")
    ids = tok.encode(prompt)
    e = tok.encode
    think = e("2 steps left\nadd two") + e("\n") + [151644] + e("1 steps left\nit is 4\n") + [151644]
    plan = think + e("0") + e("\nFinal: 4") + [151645]
    o = _llm(PlanModel(plan, len(ids)), tok).generate([q], SamplingParams(max_thinking_tokens="auto"),
                                                      use_tqdm=False)[0]
    assert o.prompt_token_ids == ids
    answer_id = e("answer")[0]
    assert o.output_token_ids == think + [answer_id] + e("\nFinal: 4") + [151645]
    assert o.num_thinking_tokens == len(think) - 1           # the ending <|im_start|> is not thinking
    assert o.answer == "Final: 4" and methods.count_steps(o.thinking) == 2
    assert o.text.count("<|im_start|>answer") == 1
    # a "0" that does not follow <|im_start|> is an ordinary thinking token
    plan2 = e("2 steps left\n0 is") + [151644] + e("0") + e("\n4") + [151645]
    o2 = _llm(PlanModel(plan2, len(ids)), tok).generate([q], SamplingParams(max_thinking_tokens="auto"),
                                                        use_tqdm=False)[0]
    assert o2.output_token_ids[:len(e("2 steps left\n0 is")) + 2] == e("2 steps left\n0 is") + [151644, answer_id]
    # extensions need one-token ends: refused with a clear error
    with pytest.raises(ValueError, match="one-token ends"):
        _llm(PlanModel(plan, len(ids)), tok).engine.add_request(q, SamplingParams(num_wait=1))


def test_qwen3_enable_thinking_false_is_plain_generation(think_tokenizer_dir):
    from s1.infer import SamplingParams
    tok = Tokenizer.from_pretrained(think_tokenizer_dir)
    assert tok.thinking_format.name == "think"
    prompt = tok.render_prompt("hi", thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ids = tok.encode(prompt)
    plan = tok.encode("Hello") + [151666] + tok.encode(" x") + [151645]   # </think> is ordinary here
    llm = _llm(PlanModel(plan, len(ids)), tok)
    o = llm.generate(["hi"], SamplingParams(thinking=False, max_thinking_tokens=1, num_wait=2), use_tqdm=False)[0]
    assert o.prompt_token_ids == ids and o.output_token_ids == plan
    assert o.num_thinking_tokens == 0 and o.thinking == "" and o.answer == "Hello</think> x"
    # thinking on: the prompt opens <think>, the natural end keeps </think>, the answer follows it
    ids_on = tok.encode(tok.render_prompt("hi"))
    plan_on = tok.encode("Let me see") + [151666] + tok.encode("\n\nHello") + [151645]
    o = _llm(PlanModel(plan_on, len(ids_on)), tok).generate(["hi"], SamplingParams(), use_tqdm=False)[0]
    assert o.prompt_token_ids[-2:] == [151665, 198] and o.output_token_ids == plan_on
    assert o.thinking == "Let me see" and o.answer == "Hello" and o.num_thinking_tokens == 3


def test_scc_style_s1_points():
    from s1.evaluation.sweep import METHODS, MethodOptions, make_points
    pts = make_points(["scc"], [16, 32], [0], opts=MethodOptions(scc_style="s1"))
    # budgets are steps; Control's limit is steps x 100 tokens (the paper's a_max 1600 .. 25600)
    assert [p.name for p in pts] == ["scc/max=1600/wait=0/steps=16/s1", "scc/max=3200/wait=0/steps=32/s1"]
    shown, kw = METHODS["scc"]("Q", pts[0])
    assert shown == "Q\n\nThink for up to 16 steps." and kw["max_thinking_tokens"] == "auto"
    with pytest.raises(ValueError, match="scc alone"):
        make_points(["scc", "budget_forcing"], [16], [0], opts=MethodOptions(scc_style="s1"))
    # the plain style keeps token budgets -> N // step_tokens steps and our [N steps left] markers
    assert make_points(["scc"], [500], [0])[0].variant == "steps=5"


def test_eval_sweep_on_a_think_model(think_tokenizer_dir):
    """`s1 eval`'s sweep on a <think> model: prompts open <think>, the answer is split at </think>
    and graded; a 2-token budget forces "\\n</think>\\n\\n" and the model's text after it is the answer."""
    from s1.evaluation import sweep
    from s1.evaluation.tasks import TaskItem
    from s1.infer import SamplingParams
    tok = Tokenizer.from_pretrained(think_tokenizer_dir)
    q = "What is 2+3?"
    plan = tok.encode("So 5.") + [151666] + tok.encode("\n\nThe answer is $\\boxed{5}$.") + [151645]
    llm = _llm(PlanModel(plan, len(tok.encode(tok.render_prompt(q)))), tok)
    points = sweep.make_points(["budget_forcing"], ["auto", 2], [0])
    summ = sweep.run_eval(llm, [TaskItem("0", q, "5", "integer")], points, task="fake", model="fake",
                          sampling_params_cls=SamplingParams, progress=False)
    by = {p["point"] if "point" in p else p["name"]: p for p in summ["points"]}
    auto = next(v for k, v in by.items() if "max=auto" in k)
    assert auto["accuracy"] == 100.0 and auto["mean_thinking_tokens"] == len(tok.encode("So 5."))
    two = next(v for k, v in by.items() if "max=2/" in k)
    assert two["mean_thinking_tokens"] == 2


def test_qwen3_checkpoint_with_a_think_tokenizer_end_to_end(think_tokenizer_dir, tmp_path):
    """The two halves of issue 29 together: a random Qwen3 checkpoint (q/k norms, no qkv bias,
    head_dim 32 != hidden / heads) saved with the <think> stand-in tokenizer, through `s1 generate`.
    The format is detected from the checkpoint's tokenizer: the prompt ends with "<think>\\n", the
    cap forces "\\n</think>\\n\\n" after exactly 6 thinking tokens, and --no-think renders the
    template's enable_thinking=False prompt (its empty <think></think> block) with no thinking."""
    import json

    from s1 import kernels
    from s1.infer.cli import generate_main
    from s1.model.loading import save_random_checkpoint
    ckpt = save_random_checkpoint(tmp_path / "qwen3", "qwen3-smoke", tokenizer_dir=think_tokenizer_dir, seed=3,
                                  torch_dtype="float32", max_position_embeddings=512)
    assert json.loads((tmp_path / "qwen3" / "config.json").read_text())["model_type"] == "qwen3"
    args = ["--model", ckpt, "--prompt", "What is 2+2?", "--max-answer-tokens", "3", "--no-progress",
            "--threads", "1", "--num-pages", "32", "--max-model-len", "256", "--device", "cpu"]
    with kernels.use_backend("torch"):
        assert generate_main(args + ["--max-thinking-tokens", "6", "--out", str(tmp_path / "t.jsonl")]) == 0
        assert generate_main(args + ["--no-think", "--max-tokens", "5", "--out", str(tmp_path / "p.jsonl")]) == 0
    (t,), (p,) = ([json.loads(line) for line in open(tmp_path / f)] for f in ("t.jsonl", "p.jsonl"))
    tok = Tokenizer.from_pretrained(think_tokenizer_dir)
    assert tok.thinking_format.end == "</think>" and tok.render_prompt("What is 2+2?").endswith("<think>\n")
    assert t["num_thinking_tokens"] == 6 and t["finish_reason"] is not None, t
    assert len(tok.encode(t["thinking"])) <= 6 and t["text"].startswith(t["thinking"]), t
    assert "\n</think>\n\n" in t["text"] and t["text"].count("</think>") == 1, t["text"]
    assert p["num_thinking_tokens"] == 0 and "</think>" not in p["text"], p
    plain = tok.render_prompt("What is 2+2?", thinking=False)
    assert plain.endswith("<think>\n\n</think>\n\n"), plain
