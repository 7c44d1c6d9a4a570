"""s1's difficulty stage (s1/curate/difficulty.py, difficulty_filter_s1): plain-chat students at
temperature 0.05 / 32,768 tokens, every attempt (and the teacher's) judged against the full
solution with s1's grading prompt; a missing verdict drops the question."""
from dataclasses import dataclass

import pytest

from s1.curate import s1rules
from s1.curate.difficulty import difficulty_filter_s1
from s1.curate.grading import LocalGrader
from s1.evaluation.judge import Judge

QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


@dataclass
class Out:
    answer: str                     # a plain reply without its stop token
    finish_reason: str = "stop"

    @property
    def text(self):
        return self.answer + "<|im_end|>"


class Student:
    """Engine stand-in with the real tokenizer: answers "right" for the questions it knows."""

    def __init__(self, tok, knows):
        self.tokenizer, self.knows, self.calls = tok, knows, []

    def generate(self, prompts, params, raw=False, use_tqdm=True):
        self.calls.append((list(prompts), list(params), raw))
        return [Out("right" if any(f"user\n{q}<|im_end|>" in p for q in self.knows) else "wrong") for p in prompts]


class ScriptedJudge(Judge):
    """Replies 'Yes' when the attempt is 'right' or the teacher's boxed answer, '(rambling)' for
    questions containing 'garbled' (no verdict), else 'No'."""

    def __init__(self, cache=None):
        super().__init__(cache)
        self.prompts = []

    def complete(self, prompts):
        self.prompts += prompts
        out = []
        for p in prompts:
            attempt = p.split("## Attempt\n")[1].split("\n\n## Correct answer")[0]
            if "garbled" in p:
                out.append("I am not sure")
            else:
                out.append("Reasoning.\n" + ("Yes" if attempt in ("right", "\\boxed{2}") else "No"))
        return out


def rows():
    mk = lambda i, q, src="math_test", sol="Full solution: so \\boxed{2}.", att="\\boxed{2}": {
        "id": i, "question": q, "source_type": src, "solution": sol, "answer": "2", "thinking": "t " * (5 + len(i)),
        "attempt": att}
    return [mk("easy", "Easy one?"), mk("hard", "Hard one?"), mk("garb", "A garbled one?"),
            mk("aime", "AIME one?", "aime_1983_2024", sol="", att="\\boxed{3}")]


def test_student_prompt_is_plain_chat_as_s1(tok):
    # s1: apply_chat_template([user], tokenize=False) + "<|im_start|>assistant\n"
    assert tok.apply_chat_template(s1rules.student_messages("What is 2+2?"), add_generation_prompt=True) == (
        QWEN_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_grader_prompt_is_s1s_system_and_user_turns(tok):
    class Eng:
        tokenizer = tok
    g = LocalGrader("/nonexistent", llm=Eng())
    assert g.render(s1rules.grading_user_prompt("Q", "A", "S")) == (
        "<|im_start|>system\n" + s1rules.GRADING_SYSTEM_PROMPT + "<|im_end|>\n"
        "<|im_start|>user\n## Problem\nQ\n\n## Attempt\nA\n\n## Correct answer\nS<|im_end|>\n<|im_start|>assistant\n")
    assert g.settings()["max_tokens"] == 8192 and "system" in g.settings()


def test_difficulty_s1_students_judge_and_missing_verdicts(tok, tmp_path, qwen_tokenizer_dir):
    s7, s32 = Student(tok, {"Easy one?"}), Student(tok, set())
    judge = ScriptedJudge(tmp_path / "grader.jsonl")
    params = {"temperature": 0.05, "max_tokens": 32768}
    kept, st = difficulty_filter_s1(rows(), [("s7", s7), ("s32", s32)], params, 0, tmp_path, qwen_tokenizer_dir,
                                    judge=judge, progress=False)
    # plain chat: raw prompts rendered with the chat template, s1's sampling settings, per-question seeds
    prompts, sps, raw = s7.calls[0]
    assert raw and all(p.startswith(QWEN_SYSTEM) and p.endswith("<|im_end|>\n<|im_start|>assistant\n") for p in prompts)
    assert "<|im_start|>think" not in "".join(prompts)
    assert {(sp.temperature, sp.max_tokens, sp.max_thinking_tokens) for sp in sps} == {(0.05, 32768, None)}
    assert len({sp.seed for sp in sps}) == 4
    # each attempt judged against the FULL solution (AIME: no worked solution -> the answer, as s1's rows)
    # (identical prompts, e.g. both students writing "wrong", are asked once)
    assert sum("## Correct answer\nFull solution: so \\boxed{2}." in p for p in judge.prompts) == 7
    assert sum(p.endswith("## Correct answer\n2") for p in judge.prompts) == 2
    # easy: solved by the 7B -> dropped; garbled: no verdict -> dropped (s1's missing feature);
    # hard and aime: both students wrong -> kept
    assert [r["id"] for r in kept] == ["hard", "aime"]
    assert kept[0]["students"] == {"s7": False, "s32": False} and kept[0]["teacher_correct"] is True
    assert kept[1]["teacher_correct"] is False and kept[1]["trace_tokens"] > 0
    assert st["correct_per_student"] == {"s7": 1, "s32": 0}
    assert st["no_verdict"] == {"s7": 1, "s32": 1, "teacher": 1}
    ms = st["per_source"]["math_test"]
    assert (ms["in"], ms["missing_verdict"], ms["solved_by_a_student"], ms["kept"]) == (3, 1, 1, 1)
    # a rerun asks neither the students nor the judge again (attempts and replies are cached)
    asked = judge.asked
    s7b, judge2 = Student(tok, {"Easy one?"}), ScriptedJudge(tmp_path / "grader.jsonl")
    kept2, _ = difficulty_filter_s1(rows(), [("s7", s7b), ("s32", s32)], params, 0, tmp_path, qwen_tokenizer_dir,
                                    judge=judge2, progress=False)
    assert kept2 == kept and s7b.calls == [] and judge2.asked == 0 and asked == 9


def test_difficulty_s1_needs_a_judge_for_students(tok, tmp_path, qwen_tokenizer_dir):
    with pytest.raises(ValueError, match="--judge"):
        difficulty_filter_s1(rows(), [("s7", Student(tok, set()))], {}, 0, tmp_path, qwen_tokenizer_dir, judge=None)
    # no students, no judge: every question kept, the teacher graded by the offline rules
    kept, st = difficulty_filter_s1(rows(), [], {}, 0, tmp_path, qwen_tokenizer_dir, progress=False)
    assert len(kept) == 4 and st["skipped"] and st["teacher_graded_by"].startswith("rules")
    assert [r["teacher_correct"] for r in kept] == [True, True, True, False]


def test_difficulty_s1_closes_each_student_it_loaded(tok, tmp_path, qwen_tokenizer_dir):
    """A student loaded from a factory is closed before the next one loads (7B then 32B on one GPU)."""
    log = []

    class Closing(Student):
        def close(self):
            log.append(("close", self.name))

    def factory(name):
        def make():
            log.append(("load", name))
            s = Closing(tok, set())
            s.name = name
            return s
        return make
    difficulty_filter_s1(rows(), [("a", factory("a")), ("b", factory("b"))], {}, 0, tmp_path, qwen_tokenizer_dir,
                         judge=ScriptedJudge(), progress=False)
    assert log == [("load", "a"), ("close", "a"), ("load", "b"), ("close", "b")]
