"""2-process gloo FSDP2 (torchrun) == 1-process run, step for step, with gradient accumulation,
activation checkpointing, a short last step (filler micro-batch on one rank) and a sharded
checkpoint interrupted + resumed in the middle."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.train.helpers import TINY, digit_rows, read_jsonl, write_json
from s1.train import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "s1.train", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout + p.stderr


def test_two_rank_fsdp_equals_one_rank(tmp_path, qwen_tokenizer_dir):
    rows = digit_rows(9, seed=21)  # 3 steps of 4: the last step has 1 sample -> rank 1 runs a filler
    data = write_json(tmp_path / "data.json", rows)
    cfgf = write_json(tmp_path / "cfg.json", TINY)
    common = dict(block_size=512, global_batch_size=4, epochs=1, lr=1e-3, warmup_ratio=0.2, seed=5)

    # 1 process, micro-batch 1 -> 4 accumulation steps.
    one = train(TrainConfig(data=rows, out=str(tmp_path / "one"), init_config=dict(TINY),
                            tokenizer=str(qwen_tokenizer_dir), micro_batch_size=1, progress=False, **common))
    # 2 processes, micro-batch 1 -> 2 accumulation steps per rank; activation checkpointing on;
    # stopped after step 2 with a sharded checkpoint, then resumed (another torchrun) for step 3.
    args = ["--init-config", cfgf, "--tokenizer", str(qwen_tokenizer_dir), "--data", data,
            "--out", str(tmp_path / "two"), "--micro-batch-size", "1", "--grad-ckpt", "--save-every", "2",
            "--block-size", "512", "--global-batch-size", "4", "--epochs", "1", "--lr", "1e-3",
            "--warmup-ratio", "0.2", "--seed", "5", "--no-progress"]
    out = _torchrun(args + ["--stop-after", "2"])
    assert "world 2 x micro 1 x accum 2" in out
    ck = tmp_path / "two" / "checkpoints" / "step_00000002"
    assert len([f for f in os.listdir(ck) if f.endswith(".distcp")]) == 2  # one shard file per rank
    out = _torchrun(args + ["--resume"])
    assert "resumed from" in out and "step_00000002" in out

    a = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b):
        assert x["trained_tokens"] == y["trained_tokens"] and x["tokens"] == y["tokens"]
        assert abs(x["loss"] - y["loss"]) < 1e-5, (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-5 * max(1.0, x["grad_norm"]), (x, y)
        assert x["lr"] == y["lr"]
    assert abs(one["losses"][-1] - b[-1]["loss"]) < 1e-5
    # The exported (gathered) weights agree as well.
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "one" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-5, worst
    # And they moved: training happened in both runs.
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    m = Qwen2ForCausalLM(Qwen2Config.from_dict(TINY))
    m.init_weights(seed=5)
    assert not torch.equal(m.state_dict()["model.norm.weight"], wa["model.norm.weight"])


def test_two_ranks_load_their_slices_and_export_streams_the_same_weights(tmp_path, qwen_tokenizer_dir):
    """--model on 2 ranks: each rank reads only its shards' rows (odd vocabulary and MLP sizes:
    uneven shards); with lr 0 the streamed export (gathered tensor by tensor) equals the source.
    The checkpoint is a Qwen3 one (per-head q/k norms of head_dim 32 != 64 / 4, no q/k/v biases):
    FSDP2 wraps, loads, trains and exports that family too (the other test here trains Qwen2)."""
    from safetensors.torch import load_file

    from s1.model.config import Qwen2Config
    from s1.model.loading import save_random_checkpoint
    src = save_random_checkpoint(tmp_path / "src", Qwen2Config.from_dict({**TINY, "vocab_size": 151937,
                                                                        "intermediate_size": 127,
                                                                        "model_type": "qwen3", "head_dim": 32}),
                                 tokenizer_dir=qwen_tokenizer_dir, seed=3)
    data = write_json(tmp_path / "data.json", digit_rows(4, seed=2))
    out = _torchrun(["--model", src, "--data", data, "--out", str(tmp_path / "o"), "--lr", "0", "--epochs", "1",
                     "--global-batch-size", "2", "--block-size", "512", "--export-dtype", "float32", "--no-progress"])
    assert "world 2" in out
    a, b = load_file(os.path.join(src, "model.safetensors")), load_file(str(tmp_path / "o" / "model.safetensors"))
    assert a.keys() == b.keys() and "model.layers.1.self_attn.k_norm.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_streaming_export_writes_hf_shards_with_an_index(tmp_path):
    """One rank, several files: the index, the HF shard names, loadable by our loader, equal."""
    from s1.model.config import Qwen2Config
    from s1.model.loading import load_model
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.train.weights import export_streaming
    cfg = Qwen2Config.from_dict(TINY)
    m = Qwen2ForCausalLM(cfg)
    m.init_weights(seed=4)
    export_streaming(m, cfg, str(tmp_path / "e"), dtype=torch.bfloat16, max_shard_size="1MB")
    names = sorted(os.listdir(tmp_path / "e"))
    assert "model.safetensors.index.json" in names and "model-00002-of-00002.safetensors" in names, names
    got = load_model(tmp_path / "e", dtype=torch.bfloat16).state_dict()
    want = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    assert all(torch.equal(got[k], want[k]) for k in want)
