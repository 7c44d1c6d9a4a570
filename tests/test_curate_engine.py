"""curate/ through the real engine (infer.LLM): a tiny random-weight Qwen2 checkpoint with the
real Qwen2.5 tokenizer acts as teacher, student and domain model. Traces are nonsense, but every
model stage runs for real: budget forcing is passed through, per-question seeds make a killed and
restarted stage give exactly the uninterrupted output."""
import json

import pytest

from s1.curate.pipeline import STAGES, Config, Pipeline
from bench.curate import make_tiny_checkpoint
from s1.common.jsonl import read_jsonl

FIX = __import__("pathlib").Path(__file__).parent / "fixtures" / "curate"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.conftest import require_shared_data

    tok = require_shared_data() / "qwen2.5-tokenizer"
    d = tmp_path_factory.mktemp("curate_models")
    return make_tiny_checkpoint(d / "teacher", tok, 0), make_tiny_checkpoint(d / "student", tok, 1)


class KillAfter:
    """Wraps an LLM; raises after n generate() calls (a run killed mid-stage)."""

    def __init__(self, llm, n):
        self.llm, self.n, self.calls = llm, n, 0

    def generate(self, *a, **kw):
        if self.calls >= self.n:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return self.llm.generate(*a, **kw)


def _cfg(out, teacher, student, **kw):
    return Config(out=str(out), pool=[str(FIX / "pool")], eval_sets=[str(FIX / "eval")], teacher=teacher,
                  students=[student], size=5, seed=0, batch_size=4, progress=False, max_questions=8,
                  teacher_params={"max_thinking_tokens": 8, "max_answer_tokens": 6, "temperature": 0.8},
                  student_params={"max_thinking_tokens": 4, "max_answer_tokens": 4}, **kw)


def test_real_engine_pipeline_and_restart(tiny_models, shared_data, tmp_path):
    from s1.curate.pipeline import default_llm_factory

    teacher, student = tiny_models
    cache = {}

    def factory(path, device):   # load each checkpoint once per test
        if path not in cache:
            cache[path] = default_llm_factory(path, device)
        return cache[path]

    ref = Pipeline(_cfg(tmp_path / "ref", teacher, student), factory, log=lambda m: None)
    ref.run()
    tr = read_jsonl(next((tmp_path / "ref" / "cache").glob("traces_*.jsonl")))
    assert ref.stats("decontam")["count"] == 16 and len(tr) == 8     # model stages on a seeded subset of 8
    assert all(r["error"] is None and 0 < r["num_thinking_tokens"] <= 8 for r in tr)   # budget cap honoured
    recs = ref.load("difficulty")
    assert all(r["trace_tokens"] > 0 for r in recs)
    assert ref.stats("difficulty")["stats"]["students"] == [next(iter(ref.stats("difficulty")["stats"]["correct_per_student"]))]
    n = ref.stats("difficulty")["count"]
    assert len(ref.load("select")) == min(5, n)
    rows = [json.loads(l) for l in (tmp_path / "ref" / "s1k.jsonl").read_text().splitlines()]
    assert len(rows) == min(5, n) and all(len(r["thinking_trajectories"]) == 1 for r in rows)

    # kill the teacher after one batch of 4, restart: identical traces (sampled at T=0.8: the
    # engine's per-request seeds make each output independent of its batch)
    run = Pipeline(_cfg(tmp_path / "run", teacher, student),
                   lambda p, d: KillAfter(factory(p, d), 1) if p == teacher else factory(p, d), log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert len(read_jsonl(next((tmp_path / "run" / "cache").glob("traces_*.jsonl")))) == 4
    Pipeline(_cfg(tmp_path / "run", teacher, student), factory, log=lambda m: None).run(STAGES[:3])
    for s in STAGES[:3]:
        a = (tmp_path / "run" / "stages" / ref.records_path(s).name).read_bytes()
        assert a == ref.records_path(s).read_bytes(), s


def test_real_engine_domain_model(tiny_models, shared_data):
    """The MSC classification prompt through the engine; a random model's unparseable answers
    fall back to the keyword classifier and are counted as such."""
    from s1.curate.domains import classify, load_msc
    from s1.curate.pipeline import default_llm_factory

    msc = load_msc(shared_data / "curation" / "msc.json")
    recs = [{"id": f"q{i}", "question": q, "source_type": "x", "metadata": {}} for i, q in
            enumerate(["A fair coin is flipped 10 times; what is the probability of 4 heads?",
                       "In triangle ABC the angle at A is 90 degrees; find the circumcircle radius."])]
    out, st = classify(recs, msc, default_llm_factory(tiny_models[1], "cpu"), None, progress=False)
    assert sum(st["methods"].values()) == 2 and set(st["methods"]) <= {"model", "keyword_fallback"}
    assert all(r["domain"] in {m["code"] for m in msc} for r in out)
