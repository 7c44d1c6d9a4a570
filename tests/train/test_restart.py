"""Restarts of a 2-rank gloo run (torchrun, CPU) as a scheduler makes them: a requeue of the same
command with `--resume auto` continues bit for bit (through a kill that tore the metrics log), a
used --out without --resume is refused and left as it was, ranks that do not share --out are
refused at start with a message saying so, and a rank that dies stops the other within seconds.
Faults are injected by tests/train/fault_runner.py."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.train.helpers import TINY, digit_rows, read_jsonl, same_export, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "tests", "train", "fault_runner.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def _torchrun(args, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), RUNNER, *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, request):
    """The command every test launches, and its uninterrupted run (2 epochs of 3 steps)."""
    from tests.conftest import require_shared_data
    tok_dir = require_shared_data() / "qwen2.5-tokenizer"
    tmp = tmp_path_factory.mktemp("restart")
    data = write_json(tmp / "data.json", digit_rows(9, seed=21))
    cfgf = write_json(tmp / "cfg.json", TINY)
    args = ["--init-config", cfgf, "--tokenizer", str(tok_dir), "--data", data, "--block-size", "512",
            "--global-batch-size", "4", "--epochs", "2", "--lr", "1e-3", "--warmup-ratio", "0.2", "--seed", "5",
            "--save-every", "2", "--no-progress"]
    p = _torchrun(args + ["--out", str(tmp / "ref")])
    assert p.returncode == 0, p.stderr[-4000:]
    return tmp, args


def _snapshot(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = (hashlib.sha256(fh.read()).hexdigest(), st.st_mtime_ns, st.st_size)
    return out


def test_requeue_with_resume_auto_continues_bit_identically(setup):
    """The same command, `--resume auto`, launched on an empty --out (starts at step 0), killed on
    every rank after step 3 with a torn step-4 line in metrics.jsonl, then launched again: it resumes
    from step 2 and the losses, logs and exported weights equal the uninterrupted run's exactly."""
    tmp, args = setup
    cmd = args + ["--out", str(tmp / "rq"), "--resume", "auto"]
    p = _torchrun(cmd, S1_TEST_FAULT="torn:3")
    assert p.returncode != 0
    assert "starting at step 0" in p.stdout + p.stderr
    with open(tmp / "rq" / "metrics.jsonl") as f:
        assert f.read().endswith('"lo')  # the torn tail is there
    assert sorted(os.listdir(tmp / "rq" / "checkpoints")) == ["step_00000002"]
    p = _torchrun(cmd)  # the requeue: the very same command
    assert p.returncode == 0, p.stderr[-4000:]
    assert "resumed from" in p.stdout and "step_00000002" in p.stdout
    ref, got = read_jsonl(tmp / "ref" / "metrics.jsonl"), read_jsonl(tmp / "rq" / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    keys = ("step", "loss", "grad_norm", "lr", "tokens", "trained_tokens")
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in ref]  # bit-identical floats
    assert same_export(tmp / "ref", tmp / "rq")


def test_used_out_without_resume_is_refused_and_left_as_it_was(setup):
    tmp, args = setup
    before = _snapshot(tmp / "ref")
    assert "metrics.jsonl" in before and "model.safetensors" in before
    p = _torchrun(args + ["--out", str(tmp / "ref")])
    assert p.returncode != 0
    assert "already holds a run" in p.stderr and "--resume auto" in p.stderr and "--overwrite" in p.stderr
    assert _snapshot(tmp / "ref") == before  # every file, its bytes and its mtime


def test_ranks_with_separate_out_folders_are_refused(setup):
    tmp, args = setup
    p = _torchrun(args + ["--out", str(tmp / "split")], S1_TEST_RANK_OUT="1")
    assert p.returncode != 0
    assert "--out must be a folder on storage shared by every rank" in p.stderr
    assert not os.path.exists(tmp / "split" / "rank0" / "checkpoints")  # stopped before any work


def test_a_killed_rank_stops_the_other_within_seconds(setup, tmp_path):
    """Without torchrun's agent (as with srun or mpirun launching each rank): rank 1 is SIGKILLed
    after step 2; rank 0, in the next collective, fails at once instead of waiting out the timeout."""
    _, args = setup
    death = tmp_path / "death"
    port = str(_free_port())
    procs = []
    for r in (0, 1):
        env = _env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, S1_TEST_FAULT="kill_rank1:2", S1_TEST_DEATH_FILE=str(death))
        procs.append(subprocess.Popen([sys.executable, RUNNER, *args, "--out", str(tmp_path / "k")], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        out0, _ = procs[0].communicate(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    t_end = time.time()
    assert death.exists(), out0[-3000:]
    died = float(death.read_text())
    assert procs[1].returncode == -9 and procs[0].returncode != 0, out0[-3000:]
    print(f"rank 0 exited {t_end - died:.2f} s after rank 1 died")
    assert t_end - died < 10, f"rank 0 exited {t_end - died:.1f} s after rank 1 died:\n{out0[-3000:]}"
