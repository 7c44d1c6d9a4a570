"""s1's judge (s1/evaluation/judge.py) and the graders' agreement (s1/evaluation/grading.py):
prompts, reply parsing ("index or -1", a letter), the per-run cache, an OpenAI-compatible endpoint
(a stub client and a real `openai` client against an in-process HTTP server), the local judge on
a tiny random-weight checkpoint (its verdicts are noise; parsing and caching are not), and
`s1 eval --rescore --grading s1 --judge-url` end to end."""
import http.server
import json
import threading
import types

import pytest

from s1.evaluation import cli, grading, report, sweep
from s1.evaluation.judge import (EXTRACTION_TEMPLATE_IDX, Judge, JudgeCache, LocalJudge, OpenAIJudge, WORKED_EXAMPLES,
                                 index_prompt, options_string, parse_index, parse_letter)
from s1.evaluation.tasks import TaskItem
from s1.infer.sampling import SamplingParams
from tests.evaluation.helpers import FakeLLM


def test_prompt_is_s1s_template_with_its_worked_examples():
    assert EXTRACTION_TEMPLATE_IDX.startswith("Look at the following attempt by a student")
    assert EXTRACTION_TEMPLATE_IDX.endswith("    Options: %(expression1)s\n    Attempt: %(expression2)s")
    for options, attempt, verdict in WORKED_EXAMPLES[:9] + WORKED_EXAMPLES[10:]:   # [9]: the AIME variant
        assert f"    Options: {options_string(options)}\n    Attempt: {attempt}\n\n{verdict}\n" in EXTRACTION_TEMPLATE_IDX
    assert options_string(["\\text{Evelyn}", "3"]) == "['\\text{Evelyn}', '3']"
    assert index_prompt(["5"], "x = 5").endswith("    Options: ['5']\n    Attempt: x = 5")


@pytest.mark.parametrize("reply,n,want", [
    ("1", 1, 0), (" 2\n", 3, 1), ("-1", 3, None), ("0", 3, None), ("4", 3, None), ("1.", 3, None),
    ("The answer is 1", 3, None), ("", 1, None), (None, 1, None), ("１", 1, None),
])
def test_parse_index(reply, n, want):
    assert parse_index(reply, n) == want


def test_parse_letter():
    assert [parse_letter(r) for r in ("A", " D\n", "-1", "a", "E", "B)", None)] == ["A", "D", None, None, None, None, None]


class CountingJudge(Judge):
    name = "counting"

    def __init__(self, cache=None, reply="1"):
        super().__init__(cache)
        self.batches, self.reply = [], reply

    def complete(self, prompts):
        self.batches.append(list(prompts))
        return [self.reply] * len(prompts)


def test_cache_per_prompt_and_settings(tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    j = CountingJudge(path)
    assert j(["p1", "p2", "p1"]) == ["1", "1", "1"]
    assert j.batches == [["p1", "p2"]] and (j.asked, j.hits) == (2, 1)
    assert j(["p2", "p3"]) == ["1", "1"] and j.batches[-1] == ["p3"]
    j2 = CountingJudge(path, reply="-1")          # a new process: the file answers
    assert j2(["p1", "p2", "p3"]) == ["1", "1", "1"] and j2.batches == []
    j3 = CountingJudge(path)
    j3.name = "other"                             # another judge: its own replies
    assert j3(["p1"]) == ["1"] and j3.batches == [["p1"]]
    with open(path, "a") as f:
        f.write('{"key": "torn')                  # an interrupted write is skipped
    assert len(JudgeCache(path).replies) == 4


class StubCompletions:
    def __init__(self, answer):
        self.calls, self.answer = [], answer

    def create(self, **kw):
        self.calls.append(kw)
        msg = types.SimpleNamespace(content=self.answer(kw["messages"][0]["content"]))
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg)])


def test_openai_judge_with_a_stub_client(tmp_path):
    comp = StubCompletions(lambda p: "1")
    client = types.SimpleNamespace(chat=types.SimpleNamespace(completions=comp))
    j = OpenAIJudge("http://x/v1", "gpt-4o-mini", cache=tmp_path / "c.jsonl", client=client)
    assert j(["a", "b", "a"]) == ["1", "1", "1"]
    assert len(comp.calls) == 2
    kw = comp.calls[0]
    assert (kw["model"], kw["temperature"], kw["max_tokens"]) == ("gpt-4o-mini", 0.5, 1024)   # s1's settings
    assert kw["messages"][0]["role"] == "user"


class _ChatHandler(http.server.BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions: "1" when the attempt holds the option's
    digits, else "-1"; GPQA prompts get "C"."""
    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        _ChatHandler.seen.append(body)
        task = prompt.rsplit("YOUR TASK", 1)[1]
        if "Answer Choices" in task:
            reply = "C"
        else:
            opt = task.split("Options: ['", 1)[1].split("'", 1)[0]
            reply = "1" if opt in task.split("Attempt:", 1)[1] else "-1"
        out = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": reply}}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def endpoint():
    pytest.importorskip("openai", reason="the openai client is the optional [judge] extra")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _ChatHandler.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _run_folder(tmp_path, answers):
    """A finished run (fake engine): question i answers answers[i] in its answer section."""
    items = [TaskItem(str(i), f"q{i}", ref, kind) for i, (ref, kind, _) in enumerate(answers)]
    llm = FakeLLM({it.question: 1 for it in items}, {it.question: "0" for it in items})
    out = tmp_path / "run"
    sweep.run_eval(llm, items, sweep.make_points(["budget_forcing"], [None], [0]), out_dir=str(out), task="fake",
                   model="fake", sampling_params_cls=SamplingParams, progress=False)
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    for r in rows:
        text = answers[int(r["qid"])][2]
        r["text"], r["answer_text"] = "think\n<|im_start|>answer\n" + text, text
    with open(out / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return out


ANSWERS = [   # (reference, kind, answer section)
    ("117", "integer", "Answer: 117"),                       # digits: no judge, both right
    ("117", "integer", "Answer: So m+n = 116 + 1 = 117"),   # rules right (sentence); s1 asks the judge
    ("\\frac{1}{2}", "math", "Answer: 0.5"),                 # rules right; the stub judge says -1
    ("5", "math", "Answer: x = 5"),                          # rules right; judge: "5" in attempt -> 1
    ("12", "integer", "Answer: 13"),                         # both wrong
]


def test_rescore_with_an_openai_endpoint(tmp_path, endpoint, capsys):
    run = _run_folder(tmp_path, ANSWERS)
    assert cli.main(["--rescore", str(run), "--grading", "s1", "--judge-url", endpoint]) == 0
    summ = json.loads((run / "summary.json").read_text())
    g = summ["graders"]
    assert (g["records"], g["rules_correct"], g["s1_correct"], g["judged"]) == (5, 4, 3, 3)
    assert (g["agree"], g["rules_only"], g["s1_only"]) == (4, 1, 0)
    assert summ["points"][0]["accuracy"] == pytest.approx(60.0)      # s1's verdicts count
    recs = [json.loads(line) for line in open(run / "samples.jsonl")]
    assert [r["s1"]["judge_reply"] for r in recs] == [None, "1", "-1", "1", None]   # digits: no judge
    assert [r["rules_correct"] for r in recs] == [True, True, True, True, False]
    assert "agree on 4/5 (80.0%)" in (run / "summary.md").read_text()
    assert json.loads((run / "config.json").read_text())["grading"] == "s1"
    n = len(_ChatHandler.seen)
    assert n == 3
    # the cache in the run folder answers a second re-score; the run's grading is remembered
    assert cli.main(["--rescore", str(run), "--judge-url", endpoint]) == 0
    assert len(_ChatHandler.seen) == n
    assert json.loads((run / "summary.json").read_text())["graders"] == g
    # back to the rules: s1's fields go, the summary is the rules' again
    assert cli.main(["--rescore", str(run), "--grading", "rules"]) == 0
    summ = json.loads((run / "summary.json").read_text())
    assert "graders" not in summ and summ["points"][0]["accuracy"] == pytest.approx(80.0)


def test_s1_grading_without_judge_and_gpqa(tmp_path):
    recs = [{"reference": "C", "kind": "choice", "text": "<|im_start|>answer\nAnswer: I think it is c",
             "choices": ["1", "2", "3", "4"], "question": "Q\n\nA) 1\nB) 2\nC) 3\nD) 4"},
            {"reference": "23", "kind": "integer", "text": "<|im_start|>answer\nAnswer: 023"},
            {"reference": "5", "kind": "math", "text": "<|im_start|>answer\nAnswer: x = 5"}]
    grading.grade_records(recs, "s1")
    assert [r["rules_correct"] for r in recs] == [True, True, True]
    assert [r["s1"]["answer"] for r in recs] == ["A", "23", "x = 5"]      # s1 without a judge: default A, raw strings
    assert [r["correct"] for r in recs] == [False, True, False]
    j = CountingJudge(reply="C")
    grading.grade_records(recs, "s1", judge=j)
    assert recs[0]["correct"] and len(j.batches) == 1 and len(j.batches[0]) == 2   # one batch
    assert any("Answer Choices:\n(A) 1\n(B) 2\n(C) 3\n(D) 4\n    Attempt: I think it is c" in p for p in j.batches[0])
    ag = grading.agreement(recs, "t", "counting")
    assert (ag["agree"], ag["records"], ag["judged"]) == (2, 3, 2)   # "C" is no index: x = 5 stays wrong


def test_bad_judge_flags_fail_before_generation(tmp_path, capsys):
    assert cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                     "--judge", str(tmp_path / "missing")]) == 2
    assert "--judge" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path), "--task", "aime24", "--out", str(tmp_path / "o"),
                     "--judge", str(tmp_path), "--judge-url", "http://x"]) == 2
    assert "not both" in capsys.readouterr().err


def test_local_judge_on_a_tiny_random_checkpoint(tmp_path, qwen_tokenizer_dir):
    pytest.importorskip("torch")
    from tests._tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", qwen_tokenizer_dir)
    cache = tmp_path / "judge_cache.jsonl"
    j = LocalJudge(ckpt, cache=cache, device="cpu", max_tokens=4, max_model_len=2048, max_num_seqs=8)
    prompts = [index_prompt(["5"], "x = 5"), index_prompt(["7"], "8"), index_prompt(["5"], "x = 5")]
    replies = j(prompts)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies) and replies[0] == replies[2]
    assert j.asked == 2 and "<|" not in "".join(replies)
    # noise, but parsed like any reply: an index in range or None
    assert all(parse_index(r, 1) in (0, None) for r in replies)
    j.close()
    j2 = LocalJudge(ckpt, cache=cache, device="cpu", max_tokens=4)
    assert j2(prompts) == replies and j2._llm is None          # all from the cache: no engine loaded
    assert j2.key(prompts[0]) != LocalJudge(ckpt, max_tokens=5).key(prompts[0])   # settings are in the key


def test_eval_with_a_local_judge_end_to_end(tmp_path, shared_data):
    """`s1 eval --grading s1 --judge CKPT`: generation, then the judge (the same tiny model) on
    every answer s1 would have judged, one batch, cached in the run folder."""
    pytest.importorskip("torch")
    import pathlib

    from s1 import kernels
    from tests._tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", shared_data / "qwen2.5-tokenizer", max_positions=2048)
    out = tmp_path / "run"
    fixture = pathlib.Path(__file__).parents[1] / "fixtures" / "gpqa_synthetic.jsonl"
    argv = ["--model", ckpt, "--task", "gpqa_diamond", "--data-file", str(fixture), "--budgets", "4", "--limit", "2",
            "--max-answer-tokens", "4", "--out", str(out), "--grading", "s1", "--judge", ckpt,
            "--judge-max-tokens", "2", "--no-progress", "--device", "cpu"]
    with kernels.use_backend("torch"):
        assert cli.main(argv) == 0
    summ = json.loads((out / "summary.json").read_text())
    g = summ["graders"]
    assert g["records"] == 2 and g["judge"].startswith("local:")
    recs = [json.loads(x) for x in open(out / "samples.jsonl")]
    assert all(r["s1"]["answer"] in "ABCD" and "question" in r for r in recs)   # noise, but a letter
    cached = [json.loads(x) for x in open(out / "judge_cache.jsonl")]
    assert len(cached) == g["judged"]
    assert json.loads((out / "config.json").read_text())["grading"] == "s1"


def test_majority_votes_follow_the_grading_and_metrics_grade_nothing(monkeypatch):
    """records -> grades -> metrics: the grading stage forms the vote groups (rules: equivalence;
    s1: its exact final strings, as its Counter did); majority_curve only counts them."""
    from s1.evaluation import grader, metrics

    def recs():
        return [{"qid": "q", "point": "p", "sample": s, "kind": "math", "reference": "0.5", "thinking_tokens": 1,
                 "text": f"<|im_start|>answer\nAnswer: {a}"} for s, a in enumerate(["3", "1/2", "0.5"])]

    rules = grading.grade_records(recs(), "rules")
    s1 = grading.grade_records(recs(), "s1")
    assert [r["vote_group"] for r in rules] == [0, 1, 1] and [r["vote_group"] for r in s1] == [0, 1, 2]

    def no_grading(*a, **k):
        raise AssertionError("metrics graded an answer")
    monkeypatch.setattr(grader, "grade", no_grading)
    assert metrics.majority_curve(rules, [3])[0]["accuracy"] == 100.0     # {1/2, 0.5} wins
    assert metrics.majority_curve(s1, [3])[0]["accuracy"] == 0.0          # three singletons: "3" drawn first
    assert "grade" not in vars(metrics)


def test_s1_judge_options_grow_with_earlier_samples():
    """s1 showed the judge the reference plus the final answers of the question's earlier samples."""
    j = CountingJudge(reply="2")
    recs = [{"qid": "q", "point": "p", "sample": s, "kind": "math", "reference": "7", "thinking_tokens": 1,
             "text": f"<|im_start|>answer\nAnswer: {a}"} for s, a in enumerate(["x = 3", "x = 7"])]
    grading.grade_records(recs, "s1", judge=j)
    assert len(j.batches) == 2                                   # one round per sample index
    assert "Options: ['7']\n" in j.batches[0][0]
    assert "Options: ['7', 'x = 3']\n" in j.batches[1][0]        # sample 0's answer (index 2 was out of range)
    assert [r["s1"]["answer"] for r in recs] == ["x = 3", "x = 3"] and not any(r["correct"] for r in recs)


def test_grader_agreement_bench_with_a_judge(tmp_path, endpoint, shared_data):
    """bench/grader_agreement.py end to end (without Math-Verify), the judge column from an
    OpenAI-compatible endpoint; a run folder is one more set."""
    from bench import grader_agreement

    run = _run_folder(tmp_path, ANSWERS)
    out = tmp_path / "ga"
    assert grader_agreement.main(["--no-mathverify", "--judge-url", endpoint, "--judge-cache",
                                  str(tmp_path / "cache.jsonl"), "--run", str(run), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["graders"] == ["rules", "s1_nojudge", "s1_judge"]
    sets = {s["set"]: s for s in res["sets"]}
    assert sets["math500_refs"]["accepted"]["rules"] == 500
    assert sets["judge_examples"]["matches_expected"]["rules"] == 25
    assert sets["run:fake:run"]["accepted"] == {"rules": 4, "s1_nojudge": 1, "s1_judge": 3}
    assert "| judge_examples | 25 |" in out.with_suffix(".md").read_text()
