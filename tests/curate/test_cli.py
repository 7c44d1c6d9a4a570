"""`s1 curate` through its CLI entry point (curate.cli.main) with tiny random-weight checkpoints
as teacher and two students, run through the real engine: every output format, the report,
teacher (not imported) traces reproducible from the engine, both students recorded, cached
reruns, single-stage reruns, and clear errors for bad checkpoint paths; then model-free runs as a
new user meets them: what is missing is said up front, a model-free curation runs as the README
writes it, an empty result is a clear message, whole and single-stage runs."""
import json
import time
from pathlib import Path

import pytest

from s1.common.jsonl import read_jsonl
from s1.curate.cli import main
from s1.curate.pipeline import STAGES
from s1.curate.store import derive_seed
from tests._tiny import make_tiny_checkpoint
from tests.conftest import ROOT

FIX = Path(__file__).parents[1] / "fixtures" / "curate"
EVAL = str(FIX / "eval")
# cheap engine calls: a few thinking/answer tokens per question, model stages on 6 questions
TEACHER = {"max_thinking_tokens": 6, "max_answer_tokens": 4, "temperature": 0.8}
GEN_SEED = 3


def _args(out, teacher, students, *extra):
    return ["--pool", str(FIX / "pool"), "--eval", str(FIX / "eval"), "--out", str(out),
            "--teacher", teacher, "--students", *students, "--size", "3", "--seed", "1",
            "--gen-seed", str(GEN_SEED), "--max-questions", "6", "--batch-size", "4",
            "--max-thinking-tokens", str(TEACHER["max_thinking_tokens"]),
            "--max-answer-tokens", str(TEACHER["max_answer_tokens"]), "--temperature", str(TEACHER["temperature"]),
            "--student-max-thinking-tokens", "3", "--student-max-answer-tokens", "3", *extra]


def _files(out: Path) -> dict[str, bytes]:
    """The promised outputs and the stage records, by relative path."""
    paths = sorted((out / "dataset").iterdir())
    paths += [out / n for n in ("s1k.parquet", "s1k.jsonl", "report.md", "report.png")]
    paths += sorted((out / "stages").glob("*.jsonl"))
    return {str(p.relative_to(out)): p.read_bytes() for p in paths}


def _seconds(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["seconds"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from tests.conftest import require_shared_data

    tok = require_shared_data() / "qwen2.5-tokenizer"
    d = tmp_path_factory.mktemp("curate_cli_models")
    return (make_tiny_checkpoint(d / "teacher", tok, 0, max_positions=8192),
            [make_tiny_checkpoint(d / "student_a", tok, 1, max_positions=8192),
             make_tiny_checkpoint(d / "student_b", tok, 2, max_positions=8192)])


def test_cli_teacher_students_end_to_end(ckpts, tmp_path, capsys, monkeypatch):
    from s1 import infer
    from s1.train.data import load_rows

    teacher, students = ckpts
    out = tmp_path / "run"
    assert main(_args(out, teacher, students)) == 0
    assert set(_seconds(capsys)) == set(STAGES)

    # every promised format, all readable by training's loader, same rows
    rows = [json.loads(l) for l in (out / "s1k.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for src in (out / "dataset", out / "s1k.parquet", out / "s1k.jsonl"):
        got = load_rows(src)
        assert [(r["id"], r["thinking_trajectories"], r["attempt"]) for r in got] == \
               [(r["id"], r["thinking_trajectories"], r["attempt"]) for r in rows], src
    assert (out / "report.md").stat().st_size > 0 and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "Imported 0, teacher 6 (errored 0), missing 0" in report

    # traces came from the teacher: stats say so, and the engine regenerates them exactly
    # (per-question seed derive_seed(gen_seed, id); outputs independent of batch composition)
    tstats = json.loads((out / "stages" / "03_traces.json").read_text())["stats"]
    assert tstats["counts"] == {"imported": 0, "teacher": 6, "missing": 0, "errored": 0}
    assert all(r["trace_origin"] == "teacher" for r in read_jsonl(out / "stages" / "03_traces.jsonl"))
    llm = infer.LLM(teacher)
    sps = [infer.SamplingParams(**TEACHER, seed=derive_seed(GEN_SEED, r["id"])) for r in rows]
    regen = llm.generate([r["question"] for r in rows], sps, use_tqdm=False)
    assert [[o.thinking] for o in regen] == [r["thinking_trajectories"] for r in rows]
    assert [o.answer for o in regen] == [r["attempt"] for r in rows]

    # both students attempted every question reaching the difficulty stage, and are recorded
    dstats = json.loads((out / "stages" / "05_difficulty.json").read_text())["stats"]
    assert len(dstats["students"]) == 2 and set(dstats["correct_per_student"]) == set(dstats["students"])
    n_quality = json.loads((out / "stages" / "04_quality.json").read_text())["count"]
    for key in dstats["students"]:
        assert len(read_jsonl(out / "cache" / f"student_{key}.jsonl")) == n_quality
    assert all(set(r["students"]) == set(dstats["students"]) for r in read_jsonl(out / "stages" / "05_difficulty.jsonl"))
    assert "Students [" in report

    # from here on no engine call may happen (everything is cached): count generate() calls
    calls = []
    real = infer.LLM

    class Counting(real):
        def generate(self, *a, **kw):
            calls.append(1)
            return super().generate(*a, **kw)

    monkeypatch.setattr(infer, "LLM", Counting)
    before = _files(out)

    # the same command again: a no-op (every stage skipped), identical files
    assert main(_args(out, teacher, students)) == 0
    assert _seconds(capsys) == {}
    assert _files(out) == before

    # one stage alone, forced: difficulty recomputed from the student caches, same records;
    # later stages stay up to date (their inputs' fingerprints did not change)
    assert main(["difficulty", "--out", str(out), "--force", "--no-progress"]) == 0
    assert set(_seconds(capsys)) == {"difficulty"}
    assert main(["output", "--out", str(out), "--force", "--no-progress"]) == 0
    assert set(_seconds(capsys)) == {"output"}
    assert _files(out) == before and calls == []

    # one stage with a changed option (saved settings otherwise kept): select reruns, output is
    # then stale until rerun; the whole command skips the model stages
    assert main(["select", "--out", str(out), "--size", "2", "--no-progress"]) == 0
    assert set(_seconds(capsys)) == {"select"}
    assert json.loads((out / "config.json").read_text())["size"] == 2
    assert main(["--out", str(out), "--no-progress"]) == 0
    assert set(_seconds(capsys)) == {"output"}
    assert len(load_rows(out / "s1k.jsonl")) == 2 and calls == []


@pytest.mark.parametrize("which", ["teacher", "students"])
def test_cli_bad_checkpoint_path(which, tmp_path, capsys, shared_data):
    bad = str(tmp_path / "no_such_checkpoint")
    if which == "teacher":
        models = ["--teacher", bad]
    else:   # traces imported, so the first model loaded is the (bad) student
        from bench.curate import build_trace_file

        build_trace_file([str(FIX / "pool")], tmp_path / "t.jsonl")
        models = ["--traces", str(tmp_path / "t.jsonl"), "--students", bad]
    rc = main(["--pool", str(FIX / "pool"), "--eval", str(FIX / "eval"), "--out", str(tmp_path / "run"),
               "--no-progress", *models])
    err = capsys.readouterr().err
    assert rc in (1, 2) and bad in err and "Traceback" not in err


def test_output_stage_reruns_when_its_files_are_gone(tmp_path):
    """A plain rerun skips up-to-date stages, but not an output stage whose files were deleted."""
    from s1.curate.cli import main
    out = tmp_path / "run"
    args = ["--pool", str(FIX / "pool"), "--eval", str(FIX / "eval"), "--out", str(out),
            "--traces", str(out / "traces.jsonl"), "--size", "3", "--seed", "1", "--no-progress"]
    import json as _json
    from s1.curate.sources import load_sources
    recs, _ = load_sources([str(FIX / "pool")], progress=False)
    out.mkdir(parents=True)
    with open(out / "traces.jsonl", "w") as f:
        for r in recs:
            f.write(_json.dumps({"question": r["question"], "thinking_trajectories": ["t " * 5],
                                 "attempt": "\\boxed{1}"}) + "\n")
    assert main(args) == 0
    first = (out / "s1k.jsonl").read_text()
    (out / "s1k.jsonl").unlink()
    (out / "report.png").unlink()
    assert main(args) == 0
    assert (out / "s1k.jsonl").read_text() == first and (out / "report.png").exists()


def test_missing_checkpoint_fails_before_any_stage_runs(tmp_path):
    """A bad checkpoint path is reported before sources/decontamination spend any time."""
    from s1.curate.cli import main
    out = tmp_path / "run"
    rc = main(["--pool", str(FIX / "pool"), "--eval", str(FIX / "eval"), "--out", str(out),
               "--teacher", str(tmp_path / "nope"), "--size", "3", "--no-progress"])
    assert rc != 0
    assert not (out / "stages").exists() or not any((out / "stages").iterdir())


# ----------------------------------------------------------------------------- model-free runs
POOL = str(ROOT / "tests" / "fixtures" / "curate" / "pool")


MATH_TEST = str(ROOT / "tests" / "fixtures" / "curate" / "pool" / "math_test")


def test_curate_without_traces_says_what_is_missing_before_any_stage(tmp_path, capsys):
    from s1.curate.cli import main
    t0 = time.perf_counter()
    assert main(["--pool", POOL, "--out", str(tmp_path / "run"), "--size", "3", "--no-progress"]) == 1
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    for option in ("--teacher CKPT", "--traces FILE", "--traces pool-solutions"):
        assert option in err, err
    assert not (tmp_path / "run" / "stages").exists()        # no stage ran


def test_curate_model_free_with_pool_solutions(tmp_path, shared_data):
    from s1.common.jsonl import read_jsonl
    from s1.curate.cli import main
    out = tmp_path / "run"
    assert main(["--pool", POOL, "--out", str(out), "--size", "3", "--traces", "pool-solutions", "--no-progress"]) == 0
    rows = read_jsonl(out / "s1k.jsonl")
    assert len(rows) == 3
    for r in rows:   # the reference solution (or, without one, the answer) stands in for the trace
        assert r["thinking_trajectories"][0] in (r["solution"], f"The answer is {r['answer']}.")
        assert r["attempt"] == "\\boxed{%s}" % r["answer"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["traces"] == ["pool-solutions"]
    assert main(["--out", str(out), "--no-progress"]) == 0   # settings come back from config.json, all up to date


def test_curate_nothing_survives_is_a_clear_message(tmp_path, capsys):
    """Every question is in the evaluation set: decontamination removes all of them. The run stops
    there with a message naming the stage (it used to end in datasets' "Keys mismatch")."""
    from s1.curate.cli import main
    args = ["--pool", MATH_TEST, "--eval", MATH_TEST, "--out", str(tmp_path / "run"), "--size", "3",
            "--traces", "pool-solutions", "--no-progress"]
    for _ in range(2):                                        # the rerun says the same
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "no question survives the decontam stage" in err and "Keys mismatch" not in err, err
    assert not (tmp_path / "run" / "dataset").exists()


def test_curate_teacher_as_hub_id_not_cached(tmp_path, monkeypatch, capsys):
    from s1.curate.cli import main
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["--pool", POOL, "--out", str(tmp_path / "run"), "--teacher", "Qwen/Qwen2.5-32B-Instruct"]) == 2
    assert "hf download Qwen/Qwen2.5-32B-Instruct" in capsys.readouterr().err


def test_cli_whole_and_single_stages(tmp_path, shared_data, capsys):
    from bench.curate import build_trace_file
    from s1.curate.cli import main

    traces = tmp_path / "traces.jsonl"
    build_trace_file([POOL], traces)
    out = tmp_path / "run"
    base = ["--out", str(out), "--no-progress"]
    assert main(["sources", *base, "--pool", POOL]) == 0
    assert main(["traces", *base]) == 1                       # decontam has not run yet
    assert "run `s1 curate decontam" in capsys.readouterr().err
    assert main(["decontam", *base, "--eval", EVAL]) == 0
    assert main(["traces", *base]) == 1                       # neither teacher nor traces file
    assert main(["traces", *base, "--traces", str(traces)]) == 0
    assert main([*base, "--size", "5", "--seed", "1"]) == 0   # the rest; settings come from config.json
    assert len((out / "s1k.jsonl").read_text().splitlines()) == 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pool"] == [POOL] and cfg["size"] == 5
    capsys.readouterr()
    assert main([*base]) == 0                                   # everything up to date
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"seconds": {}}
    assert main(["select", *base, "--selector", "longest"]) == 0
    assert main(["bogus", *base]) == 2


@pytest.mark.parametrize("extra,message", [
    (["--size", "0", "--traces", "pool-solutions"], "--size must be at least 1"),
    (["--traces", "missing_traces.jsonl"], "traces file missing_traces.jsonl does not exist"),
    (["--pool", "no_such_pool", "--traces", "pool-solutions"], "pool source no_such_pool does not exist"),
    (["--recipe", "s1", "--traces", "pool-solutions", "--students", "{ckpt}"], "give --judge CKPT or --judge-url"),
    (["--recipe", "s1", "--traces", "pool-solutions", "--student-max-thinking-tokens", "8"], "plain chat"),
    (["--traces", "pool-solutions", "--judge", "{ckpt}"], "--recipe s1 only"),
    (["--recipe", "s1", "--traces", "pool-solutions", "--selector", "longest"], "two-phase sampler"),
])
def test_curate_usage_errors_exit_2_before_any_stage(tmp_path, monkeypatch, capsys, extra, message):
    """A bad size, a missing traces file or pool path, an s1 recipe without its judge: exit 2 at
    once (they used to be found after the earlier stages ran, a bad pool path with exit 1)."""
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    args = ["--pool", POOL, "--out", str(tmp_path / "run"), "--no-progress"]
    if "--pool" in extra:
        args = args[2:]
    t0 = time.perf_counter()
    assert main(args + [str(ckpt) if a == "{ckpt}" else a for a in extra]) == 2
    assert time.perf_counter() - t0 < 5
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()          # no stage ran, no config written


def test_pool_checked_only_when_the_sources_stage_runs(tmp_path):
    """A run folder whose pool is gone still runs its later stages (the check is for stages that read it)."""
    import shutil
    pool = tmp_path / "pool"
    shutil.copytree(POOL, pool)
    base = ["--out", str(tmp_path / "run"), "--no-progress"]
    assert main(["sources", *base, "--pool", str(pool)]) == 0
    shutil.rmtree(pool)
    assert main(["decontam", *base, "--eval", EVAL]) == 0
    assert main(["sources", *base, "--force"]) == 2
