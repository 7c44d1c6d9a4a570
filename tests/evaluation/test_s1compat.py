"""s1-compatible extraction and grading (s1/evaluation/s1compat.py): s1's order and regexes."""
import pytest

from s1.evaluation.s1compat import s1_answer_part, s1_extract, s1_grade, s1_judge_prompt


@pytest.mark.parametrize("text,expected", [
    # 1. after the last "<|im_start|>answer\n"
    ("<|im_start|>think\n\\boxed{3}<|im_start|>answer\nAnswer: 42", "42"),
    ("a<|im_start|>answer\nx<|im_start|>answer\nAnswer: 7", "7"),
    # ... else after the last "<|im_start|>" minus its first line
    ("<|im_start|>think\nthe answer: 9", "9"),
    ("<|im_start|>answer Answer: 5\nAnswer: 6", "6"),
    # 2. the last \boxed{} (brace counting), its content unstripped
    ("\\boxed{1} and \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
    ("Answer: 3 \\boxed{ 4 }", " 4 "),
    ("\\fbox{8}", "8"),
    # "\boxed " anywhere wins: up to the next "$"
    ("$\\boxed 5$ and later \\boxed{6}", "5"),
    # 3. everything after the FIRST "Answer:" (DOTALL, greedy), case-insensitive
    ("Final Answer: 10\nanswer: 11", "10\nanswer: 11"),
    ("ANSWER :  Here is the solution:\n\n10", "Here is the solution:\n\n10"),
    # 4. nothing found: the text itself
    ("just 12", "just 12"),
    ("\\boxed{unclosed", "\\boxed{unclosed"),
    (None, None),
])
def test_s1_extract(text, expected):
    assert s1_extract(text) == expected


def test_answer_part_without_delimiter_is_the_text():
    assert s1_answer_part("no tokens\nhere") == "no tokens\nhere"


def test_digit_strings_compare_as_integers():
    assert s1_grade("023", "23", "integer")["correct"]
    assert s1_grade("23", "023", "integer")["correct"]
    assert not s1_grade("24", "23", "integer")["correct"]
    # not a bare digit string and no judge: s1 compared the raw strings
    assert not s1_grade("23 ", "23", "integer")["correct"]
    assert not s1_grade("$23$", "23", "integer")["correct"]
    assert s1_grade("\\frac{1}{2}", "\\frac{1}{2}", "math")["correct"]
    assert not s1_grade("0.5", "\\frac{1}{2}", "math")["correct"]
    assert s1_judge_prompt("023", "23", "integer") is None


def test_judge_reply_picks_the_option():
    p = s1_judge_prompt("0.5", "\\frac{1}{2}", "math")
    assert "Options: ['\\frac{1}{2}']\n    Attempt: 0.5" in p
    assert s1_grade("0.5", "\\frac{1}{2}", "math", reply="1")["correct"]
    assert s1_grade("0.5", "\\frac{1}{2}", "math", reply=" 1\n")["judged"]
    for bad in ("-1", "2", "0", "one", ""):
        assert not s1_grade("0.5", "\\frac{1}{2}", "math", reply=bad)["correct"], bad
    # several samples: the other answers are options too; an index past the reference is wrong
    r = s1_grade("0.5", "\\frac{1}{2}", "math", reply="2", other_answers=["0.5", "3"])
    assert r["answer"] in ("0.5", "3") and not r["correct"]
    # AIME uses its own variant of the prompt (the 12th example among six options)
    assert "['11', '100', '50', '-5', '12', '10']" in s1_judge_prompt("x", "12", "integer")
    assert "['11', '100', '50', '-5', '12', '10']" not in s1_judge_prompt("x", "12", "math")


def test_gpqa_letter_judge_and_default():
    assert s1_grade("C", "C", "choice")["correct"]
    assert s1_grade("c", "C", "choice") == {"answer": "C", "correct": True, "judged": False}
    assert s1_judge_prompt("c", "C", "choice") is None
    # not a bare letter and no judge: s1's default "A"
    assert s1_grade("I think it is c", "A", "choice") == {"answer": "A", "correct": True, "judged": False}
    assert s1_grade("I think it is c", "C", "choice", reply="C")["correct"]
    assert s1_grade("I think it is c", "C", "choice", reply="-1")["answer"] == "A"
    p = s1_judge_prompt("it is c", "C", "choice", question="Q?\n\nA) 1\nB) 2\nC) 3\nD) 4", choices=["1", "2", "3", "4"])
    assert "Question: Q?\nAnswer Choices:\n(A) 1\n(B) 2\n(C) 3\n(D) 4\n    Attempt: it is c" in p
