"""Profiling (s1/common/profiling.py): `s1 generate` and `s1 train` traces parse (gzipped Chrome
JSON) and hold the engine's / trainer's phase ranges, --profile-steps limits the traced steps, the
--timeline file has its fields and `s1 bench timeline` turns it into a plot and a table, the flags
are checked, and with profiling off the engine and trainer never build a range."""
import gzip
import json

import pytest
import torch

from s1.common import profiling
from tests.conftest import require_shared_data


def _trace_events(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:     # a real JSON parser over the gzip stream
        return json.load(f)["traceEvents"]


def _annotations(path) -> set[str]:
    return {e["name"] for e in _trace_events(path) if e.get("cat") == "user_annotation"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests._tiny import make_tiny_checkpoint
    d = tmp_path_factory.mktemp("tiny_ckpt")
    make_tiny_checkpoint(d, require_shared_data() / "qwen2.5-tokenizer")
    return d


def _generate(tiny, tmp_path, *extra):
    from s1.infer.cli import generate_main
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("What is 2+2?", "Name a prime.")))
    return generate_main(["--model", str(tiny), "--no-progress", "--prompts", str(q), "--out", str(tmp_path / "o.jsonl"),
                          "--max-thinking-tokens", "6", "--max-answer-tokens", "3", *map(str, extra)])


def test_generate_trace_has_the_engine_phases_in_the_step_window_and_the_timeline_plots(tiny, tmp_path, capsys):
    prof, tl = tmp_path / "prof", tmp_path / "run.timeline.jsonl"
    assert _generate(tiny, tmp_path, "--profile", prof, "--profile-steps", "2:3", "--timeline", tl) == 0
    assert profiling.active() is profiling.OFF                       # the session closed
    traces = sorted(prof.glob("*.trace.json.gz"))
    assert len(traces) == 1 and "steps2-3" in traces[0].name
    names = _annotations(traces[0])
    # the window: steps 2 and 3 only (decode steps: the prefill was step 1)
    assert {n for n in names if n.startswith("step ")} == {"step 2", "step 3"}
    assert {"schedule", "page_flush", "prepare_inputs", "decode_forward", "sample_and_force", "read_back",
            "postprocess"} <= names
    assert "prefill_forward" not in names
    assert any(e.get("cat") == "cpu_op" for e in _trace_events(traces[0]))   # the ops inside the ranges

    lines = [json.loads(x) for x in tl.read_text().splitlines()]
    head, steps = lines[0], lines[1:]
    assert head["timeline"] == profiling.TIMELINE_VERSION and head["device"] == "cpu"
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 6
    first = steps[0]
    assert first["kind"] == "prefill" and first["batch"] == 2 and first["tokens"] > 10
    assert {"schedule", "prefill_forward", "sample_and_force", "postprocess"} <= set(first["phases_ms"])
    assert any(r.get("kind") == "decode" and r["tokens"] == r["batch"] for r in steps)
    for r in steps:
        assert r["device_ms"] is None                                   # CPU: no CUDA events
        assert 0 <= sum(r["phases_ms"].values()) <= r["wall_ms"] + 1e-6

    from bench.timeline import main as timeline_main
    capsys.readouterr()
    assert timeline_main([str(tl)]) == 0
    png, md = tmp_path / "run.timeline.png", tmp_path / "run.timeline.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "## prefill: 1 steps" in text and "| decode_forward |" in text and "| sample_and_force |" in text
    assert "wrote" in capsys.readouterr().out


def test_off_path_builds_no_range(tiny, tmp_path, monkeypatch):
    """Without the flags the engine reports to OFF, whose phase() is one shared object: no range
    object, no record_function, no clock read per phase."""
    assert profiling.active() is profiling.OFF
    assert profiling.OFF.phase("schedule") is profiling.OFF.phase("decode_forward")

    def boom(*a, **k):
        raise AssertionError("a profiling range was built with profiling off")
    monkeypatch.setattr(profiling._Range, "__init__", boom)
    monkeypatch.setattr(profiling, "Recorder", boom)
    monkeypatch.setattr(torch.autograd.profiler, "record_function", boom)
    assert _generate(tiny, tmp_path) == 0


def test_flags_are_checked(tiny, tmp_path, capsys):
    assert _generate(tiny, tmp_path, "--profile-steps", "3:2", "--profile", tmp_path / "p") == 2
    assert "--profile-steps '3:2'" in capsys.readouterr().err
    assert _generate(tiny, tmp_path, "--profile-steps", "1:2") == 2
    assert "needs --profile DIR" in capsys.readouterr().err
    for bad in ("x", "0:3", "4", "2:"):
        with pytest.raises(ValueError, match="--profile-steps"):
            profiling.parse_steps(bad)
    assert profiling.parse_steps("5:20") == (5, 20)
    said = []
    with profiling.session(str(tmp_path / "late"), (500, 600), say=said.append):
        pass                                                    # a window the run never reaches
    assert "no trace written" in said[-1] and not list((tmp_path / "late").iterdir())


def test_train_trace_has_the_trainer_phases(tmp_path, qwen_tokenizer_dir):
    from s1.train import train
    from tests.train.helpers import digit_rows, train_config
    cfg = train_config(tmp_path, qwen_tokenizer_dir, "run", digit_rows(2), epochs=1, save_every=1,
                       global_batch_size=2, block_size=128, export=False)      # one step of 2 micro-batches
    with profiling.session(str(tmp_path / "prof"), (1, 1), str(tmp_path / "tl.jsonl"), label="train", say=print) as rec:
        assert profiling.active() is rec
        train(cfg)
    traces = list((tmp_path / "prof").glob("*.trace.json.gz"))
    assert len(traces) == 1
    names = _annotations(traces[0])
    assert {"data", "forward", "backward", "optimizer_step", "checkpoint"} <= names
    assert {n for n in names if n.startswith("step ")} == {"step 1"}
    assert sum(e["name"] == "backward" for e in _trace_events(traces[0])) == 2     # one per micro-batch
    steps = [json.loads(x) for x in (tmp_path / "tl.jsonl").read_text().splitlines()[1:]]
    assert [r["kind"] for r in steps] == ["train"] and steps[0]["batch"] == 2
    assert {"data", "forward", "backward", "optimizer_step", "checkpoint"} <= set(steps[0]["phases_ms"])


def test_bench_cli_takes_the_profiling_flags_out_of_the_script_args():
    from bench.cli import split_profiling
    prof, rest = split_profiling(["--smoke", "--profile", "d", "--out", "x.json", "--profile-steps", "1:4"])
    assert (prof.profile, prof.profile_steps, prof.timeline) == ("d", "1:4", None)
    assert rest == ["--smoke", "--out", "x.json"]


def test_timeline_reader_names_bad_files(tmp_path):
    from bench.timeline import read_timeline
    p = tmp_path / "x.jsonl"
    p.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="not a timeline"):
        read_timeline(str(p))
    p.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_timeline(str(p))
