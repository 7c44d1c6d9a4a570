"""Trainer loop (in-process, world size 1, CPU fp32): resume, loss normalization, packing,
golden curve, HF export, divergence stop, atomic checkpoints, and the options with s1's defaults
(each sequence weighs the same; --resume without a checkpoint is an error)."""
import json
import math
import os
import shutil

import pytest
import torch

from s1.train import TrainConfig, TrainingDiverged, train
from s1.train.checkpoint import latest_checkpoint, list_checkpoints
from s1.train.loop import lr_lambda
from tests.train.helpers import (RESUME_KW, RESUME_ROWS, TINY, digit_rows, metrics_curve, read_jsonl, same_export,
                                 train_config, write_json)

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "train_tiny.json")


def test_lr_schedule_matches_hf():
    pytest.importorskip("transformers")
    from transformers import get_cosine_schedule_with_warmup
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sch = get_cosine_schedule_with_warmup(opt, num_warmup_steps=16, num_training_steps=315)
    for step in range(315):
        assert abs(opt.param_groups[0]["lr"] - lr_lambda(step, 315, 16)) < 1e-12, step
        opt.step()
        sch.step()
    assert math.ceil(0.05 * 315) == 16  # s1: 5% warmup of 315 steps = 16 steps


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, request):
    """The uninterrupted 6-step reference run that the resume tests must reproduce exactly."""
    from tests.conftest import require_shared_data
    tok_dir = require_shared_data() / "qwen2.5-tokenizer"
    tmp = tmp_path_factory.mktemp("full")
    r = train(train_config(tmp, tok_dir, "full", digit_rows(**RESUME_ROWS), **RESUME_KW))
    assert r["total_steps"] == 6 and len(r["losses"]) == 6
    return tmp / "full", r["losses"]


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, qwen_tokenizer_dir, full_run):
    full_dir, full_losses = full_run
    rows = digit_rows(**RESUME_ROWS)
    # Stopped after step 4 (checkpoints at 2 and 4), then resumed.
    part = train(train_config(tmp_path, qwen_tokenizer_dir, "res", rows, save_every=2, stop_after=4, **RESUME_KW))
    assert part["steps"] == 4 and not part["exported"]
    ck = tmp_path / "res" / "checkpoints"
    assert [s for s, _ in list_checkpoints(ck)] == [4]  # keep_checkpoints=1: step 2 was replaced
    # A kill during a later save leaves a tmp dir (and maybe a dir without train_state.pt): ignored.
    os.makedirs(ck / "step_00000005.tmp")
    (ck / "step_00000005.tmp" / "garbage").write_text("partial")
    os.makedirs(ck / "step_00000006")
    assert latest_checkpoint(str(ck)).endswith("step_00000004")
    shutil.rmtree(ck / "step_00000006")
    res = train(train_config(tmp_path, qwen_tokenizer_dir, "res", rows, save_every=2, resume=True, **RESUME_KW))
    assert res["losses"] == full_losses[4:]  # exact, not approximate
    assert metrics_curve(tmp_path / "res" / "metrics.jsonl") == metrics_curve(full_dir / "metrics.jsonl")
    assert same_export(full_dir, tmp_path / "res")
    # Changing a trajectory setting on resume is refused.
    with pytest.raises(ValueError, match="settings differ"):
        train(train_config(tmp_path, qwen_tokenizer_dir, "res", rows, save_every=2, resume=True, lr=2e-3, **RESUME_KW))
    with pytest.raises(ValueError, match="data_fingerprint"):  # different data
        train(train_config(tmp_path, qwen_tokenizer_dir, "res", rows[:8], save_every=2, resume=True, **RESUME_KW))


def test_sigkill_then_resume_reproduces_uninterrupted_run(tmp_path, qwen_tokenizer_dir, full_run):
    """A real kill (SIGKILL, at whatever point it lands: mid-step or mid-save) of a CLI run that
    checkpoints every step; --resume then finishes with the uninterrupted curve, bit for bit."""
    import signal
    import subprocess
    import sys
    import time
    full_dir, full_losses = full_run
    rows = digit_rows(**RESUME_ROWS)
    data = write_json(tmp_path / "data.json", rows)
    cfgf = write_json(tmp_path / "cfg.json", TINY)
    out = tmp_path / "killed"
    args = ["--init-config", cfgf, "--tokenizer", str(qwen_tokenizer_dir), "--data", data, "--out", str(out),
            "--block-size", "512", "--global-batch-size", "4", "--micro-batch-size", "2", "--epochs", "2",
            "--lr", "1e-3", "--warmup-ratio", "0.2", "--seed", "3", "--save-every", "1", "--no-progress",
            "--loss-weighting", "token"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "s1.train", *args], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoints" / "step_00000003").exists():
            assert proc.poll() is None, "training exited before it could be killed"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    last = latest_checkpoint(str(out / "checkpoints"))
    assert last is not None and 3 <= int(last[-8:]) <= 6
    res = train(train_config(tmp_path, qwen_tokenizer_dir, "killed", rows, save_every=1, resume=True, **RESUME_KW))
    assert res["losses"] == full_losses[int(last[-8:]):]
    assert metrics_curve(out / "metrics.jsonl") == metrics_curve(full_dir / "metrics.jsonl")
    assert same_export(full_dir, out)


def test_masked_tokens_contribute_nothing_every_answer_token_counts(tmp_path, qwen_tokenizer_dir):
    """Step-1 training loss (lr 0: the exported model is the initial one) == mean CE over exactly
    the assistant tokens and the final newline, computed independently with HF transformers' logits."""
    transformers = pytest.importorskip("transformers")
    from s1.model.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer
    tok = Tokenizer.from_pretrained(qwen_tokenizer_dir)
    rows = digit_rows(4, seed=2)
    r = train(train_config(tmp_path, qwen_tokenizer_dir, "mask", rows, lr=0.0, epochs=1, micro_batch_size=4))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "mask"), dtype=torch.float32).eval()
    nll, count = 0.0, 0
    for row in rows:
        q, th, at = row["question"], row["thinking_trajectories"][0], row["attempt"]
        prompt = (f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
                  f"<|im_start|>assistant\n")
        answer = f"<|im_start|>think\n{th}\n<|im_start|>answer\nAnswer: {at}<|im_end|>"
        p_ids, a_ids = tok.encode(prompt), tok.encode(answer) + tok.encode("\n")  # the "\n" is trained (s1)
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
        for j, y in enumerate(a_ids):  # token at position len(p)+j is predicted from position len(p)+j-1
            nll -= float(logp[len(p_ids) + j - 1, y])
        count += len(a_ids)
    # Masked tokens contribute nothing: adding their CE would change the mean by far more.
    assert read_jsonl(tmp_path / "mask" / "metrics.jsonl")[0]["trained_tokens"] == count
    assert abs(r["losses"][0] - nll / count) < 1e-5


def test_sequence_weighting_is_mean_of_per_sequence_means(tmp_path, qwen_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from s1.train.data import tokenize_rows
    from s1.model.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(qwen_tokenizer_dir)
    rows = digit_rows(4, seed=5)
    r = train(train_config(tmp_path, qwen_tokenizer_dir, "seqw", rows, lr=0.0, epochs=1, loss_weighting="sequence"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "seqw"), dtype=torch.float32).eval()
    examples, _ = tokenize_rows(rows, tok, 512)
    means = []
    for e in examples:
        with torch.no_grad():
            logits = hf(torch.tensor([e.ids])).logits[0]
        means.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor(e.labels))))  # HF mean
    assert abs(r["losses"][0] - sum(means) / len(means)) < 1e-5


def test_packed_equals_unpacked(tmp_path, qwen_tokenizer_dir):
    """One global batch = all 6 examples: packed blocks vs one sequence per micro-batch give the
    same loss curve (same tokens, same global-token normalization, no cross-sequence attention)."""
    rows = digit_rows(6, seed=4)
    kw = dict(epochs=2, warmup_ratio=0.0, lr=1e-3)
    un = train(train_config(tmp_path, qwen_tokenizer_dir, "un", rows, global_batch_size=6, micro_batch_size=3, **kw))
    from s1.train.data import make_samples, tokenize_rows
    from s1.model.tokenizer import Tokenizer
    ex, _ = tokenize_rows(rows, Tokenizer.from_pretrained(qwen_tokenizer_dir), 256)
    n_blocks = len(make_samples(ex, 256, pack=True))
    assert 1 < n_blocks < 6  # packing really puts several sequences in a block
    pk = train(train_config(tmp_path, qwen_tokenizer_dir, "pk", rows, pack=True, block_size=256,
                    global_batch_size=n_blocks, **kw))
    assert len(un["losses"]) == len(pk["losses"]) == 2
    for a, b in zip(un["losses"], pk["losses"]):
        assert abs(a - b) < 1e-5, (un["losses"], pk["losses"])
    ga = [r["grad_norm"] for r in read_jsonl(tmp_path / "un" / "metrics.jsonl")]
    gb = [r["grad_norm"] for r in read_jsonl(tmp_path / "pk" / "metrics.jsonl")]
    assert all(abs(a - b) <= 1e-5 * max(1.0, a) for a, b in zip(ga, gb))


def test_golden_loss_curve(tmp_path, qwen_tokenizer_dir):
    """A tiny fixed configuration's loss / grad-norm curve, checked into tests/golden.
    Regenerate (after an intended change only) with S1_UPDATE_GOLDEN=1."""
    rows = digit_rows(8, seed=11)
    r = train(train_config(tmp_path, qwen_tokenizer_dir, "golden", rows, epochs=4, lr=5e-3, warmup_ratio=0.25,
                   seed=0, export=False, micro_batch_size=2))
    recs = read_jsonl(tmp_path / "golden" / "metrics.jsonl")
    got = {"config": "TINY 2x64, digit_rows(8, seed=11), gb 4, mb 2, epochs 4, lr 5e-3, warmup 0.25, seed 0",
           "loss": [x["loss"] for x in recs], "grad_norm": [x["grad_norm"] for x in recs],
           "lr": [x["lr"] for x in recs], "trained_tokens": [x["trained_tokens"] for x in recs]}
    if os.environ.get("S1_UPDATE_GOLDEN") == "1":
        with open(GOLDEN, "w") as f:
            json.dump(got, f, indent=1)
    with open(GOLDEN) as f:
        want = json.load(f)
    assert got["trained_tokens"] == want["trained_tokens"]
    assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-4)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3, abs=1e-4)
    assert want["loss"][-1] < want["loss"][0] - 1.0  # the curve does learn


def test_export_loads_in_transformers_with_identical_logits(tmp_path, qwen_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from s1.model.loading import load_model
    rows = digit_rows(4, seed=6)
    train(train_config(tmp_path, qwen_tokenizer_dir, "exp", rows, epochs=1, warmup_ratio=0.0, lr=1e-2,
               grad_ckpt=True, micro_batch_size=4))
    out = tmp_path / "exp"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ours = load_model(out, dtype=torch.float32)
    ids = torch.tensor(transformers.AutoTokenizer.from_pretrained(str(out))("Running digit sum of 3 4")["input_ids"])
    with torch.no_grad():
        a = hf(ids[None]).logits[0]
        b = ours(ids)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < 1e-5
    assert not torch.equal(ours.model.layers[0].mlp.up_proj.weight,
                           _init_weights()["model.layers.0.mlp.up_proj.weight"])  # it trained


def _init_weights():
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    m = Qwen2ForCausalLM(Qwen2Config.from_dict(TINY))
    m.init_weights(seed=3)
    return m.state_dict()


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, qwen_tokenizer_dir):
    rows = digit_rows(8, seed=7)
    cfg = train_config(tmp_path, qwen_tokenizer_dir, "nan", rows, lr=1e30, warmup_ratio=0.0, save_every=1,
               max_grad_norm=0.0, micro_batch_size=4)
    with pytest.raises(TrainingDiverged, match=r"step \d+: (loss|gradient norm) is (nan|inf).*Last good "
                                                r"checkpoint: .*step_0000000\d"):
        train(cfg)
    ck = list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert ck, "the last good checkpoint is kept"
    recs = read_jsonl(tmp_path / "nan" / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) for r in recs) and recs[-1]["step"] == ck[-1][0]
    assert not os.path.exists(tmp_path / "nan" / "model.safetensors")  # no export of a diverged run


def test_bf16_compute_keeps_fp32_master_weights(tmp_path, qwen_tokenizer_dir):
    """FSDP2 MixedPrecisionPolicy(param_dtype=bf16): compute in bf16, update fp32 masters. An
    AdamW step of lr 1e-5 is far below bf16's resolution at |w| ~ 0.02 (ulp ~1.2e-4), so only fp32
    master weights can record it."""
    rows = digit_rows(4, seed=8)
    r = train(train_config(tmp_path, qwen_tokenizer_dir, "bf16", rows, dtype="bf16", lr=1e-5, warmup_ratio=0.0,
                   epochs=1, micro_batch_size=4, weight_decay=0.0, export_dtype="fp32"))
    ref = train(train_config(tmp_path, qwen_tokenizer_dir, "fp32", rows, lr=1e-5, warmup_ratio=0.0, epochs=1,
                     micro_batch_size=4, weight_decay=0.0, export_dtype="fp32"))
    assert abs(r["losses"][0] - ref["losses"][0]) < 2e-2  # bf16 forward vs fp32 forward
    from safetensors.torch import load_file
    w = load_file(str(tmp_path / "bf16" / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    assert w.dtype == torch.float32
    w0 = _init_weights()["model.layers.0.mlp.up_proj.weight"]
    step = (w - w0).abs()
    assert 0.5e-5 < step.max().item() < 2e-5  # Adam's first step moves each weight by ~lr
    assert not torch.equal(w, w.to(torch.bfloat16).float())  # not bf16-representable: fp32 masters


# ----------------------------------------------------------------------------- s1's defaults
def _options_cfg(tmp_path, **kw):
    return TrainConfig(**dict(data=digit_rows(4), out=str(tmp_path / "out"), init_config=dict(TINY),
                              block_size=256, progress=False) | kw)


def test_sequence_weighting_is_the_default(tmp_path):
    """s1 trains one sequence per GPU, each weighing the same: the default, and it works with
    packing and with several sequences per micro-batch; token-mean stays an option."""
    cfg = _options_cfg(tmp_path)
    assert (cfg.loss_weighting, cfg.micro_batch_size, cfg.pack) == ("sequence", 1, False)
    assert _options_cfg(tmp_path, loss_weighting="token", micro_batch_size=4, global_batch_size=4).loss_weighting == "token"
    assert _options_cfg(tmp_path, micro_batch_size=4, global_batch_size=4).loss_weighting == "sequence"
    assert _options_cfg(tmp_path, pack=True).loss_weighting == "sequence"


def test_per_sequence_ops_same_loss_and_gradients_as_one_sequence_per_micro_batch(qwen_tokenizer_dir):
    """Three sequences in one packed micro-batch through PerSequenceOps: the loss and every
    parameter's gradient equal those of three one-sequence micro-batches, each CE sum / its count."""
    from s1.kernels import get_ops
    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM
    from s1.model.tokenizer import Tokenizer
    from s1.train.data import collate, tokenize_rows
    from s1.train.loop import PerSequenceOps, _sequence_trained
    ex, _ = tokenize_rows(digit_rows(3, seed=8), Tokenizer.from_pretrained(qwen_tokenizer_dir), 512)
    m = Qwen2ForCausalLM(Qwen2Config.from_dict(TINY))
    m.init_weights(seed=1)
    ops = get_ops(torch.device("cpu"))

    def grads():
        g = {k: p.grad.clone() for k, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
        return g
    mb = collate(ex)
    assert mb.n_seqs == 3 and _sequence_trained(mb) == [e.n_trained for e in ex]
    packed = m(mb.input_ids, cu_seqlens=mb.cu_seqlens, max_seqlen=mb.max_seqlen, labels=mb.labels,
               ops=PerSequenceOps(ops, mb.cu_seqlens.tolist(), _sequence_trained(mb)))
    packed.backward()
    g_packed = grads()
    single = 0.0
    for e in ex:
        one = collate([e])
        loss = m(one.input_ids, cu_seqlens=one.cu_seqlens, max_seqlen=one.max_seqlen, labels=one.labels) / e.n_trained
        loss.backward()
        single += loss.item()
    g_single = grads()
    assert abs(packed.item() - single) < 1e-5
    for k in g_single:
        torch.testing.assert_close(g_packed[k], g_single[k], rtol=1e-5, atol=1e-7, msg=k)


def test_sequence_weighting_with_pack_and_micro_batches_matches_one_per_micro_batch(tmp_path, qwen_tokenizer_dir):
    """s1's per-sequence mean through the trainer: one sequence per micro-batch, two per
    micro-batch and packed blocks give the same losses, gradient norms and weights."""
    rows = digit_rows(4, seed=6)
    kw = dict(epochs=2, warmup_ratio=0.0, lr=1e-3, loss_weighting="sequence")
    a = train(train_config(tmp_path, qwen_tokenizer_dir, "m1", rows, global_batch_size=4, micro_batch_size=1, **kw))
    b = train(train_config(tmp_path, qwen_tokenizer_dir, "m2", rows, global_batch_size=4, micro_batch_size=2, **kw))
    c = train(train_config(tmp_path, qwen_tokenizer_dir, "pk", rows, pack=True, block_size=1024,
                           global_batch_size=1, **kw))
    assert read_jsonl(tmp_path / "pk" / "metrics.jsonl")[0]["seqs"] == 4  # one block of all 4 sequences
    for other, name in ((b, "m2"), (c, "pk")):
        assert all(abs(x - y) < 1e-5 for x, y in zip(a["losses"], other["losses"])), (a["losses"], other["losses"])
        ga = [r["grad_norm"] for r in read_jsonl(tmp_path / "m1" / "metrics.jsonl")]
        gb = [r["grad_norm"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
        assert all(abs(x - y) <= 1e-5 * max(1.0, x) for x, y in zip(ga, gb)), (ga, gb)
    from safetensors.torch import load_file
    wa, wc = load_file(str(tmp_path / "m1" / "model.safetensors")), load_file(str(tmp_path / "pk" / "model.safetensors"))
    assert max((wa[k] - wc[k]).abs().max().item() for k in wa) < 1e-5


def test_export_files_have_the_usual_mode(tmp_path, qwen_tokenizer_dir):
    old = os.umask(0o022)
    try:
        train(train_config(tmp_path, qwen_tokenizer_dir, "mode", digit_rows(2), epochs=1, global_batch_size=2))
    finally:
        os.umask(old)
    modes = {f: oct(os.stat(tmp_path / "mode" / f).st_mode & 0o777) for f in os.listdir(tmp_path / "mode")
             if os.path.isfile(tmp_path / "mode" / f)}
    assert "model.safetensors" in modes and set(modes.values()) == {"0o644"}, modes


def test_resume_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path, qwen_tokenizer_dir):
    """`train --resume` into an --out with no complete checkpoint stops before any work (no model
    built, --out not even created) with a message naming the checkpoints folder."""
    cfg = _options_cfg(tmp_path, tokenizer=str(qwen_tokenizer_dir), resume=True)
    with pytest.raises(ValueError, match=r"--resume: no complete checkpoint in .*out/checkpoints") as e:
        train(cfg)
    assert "run without --resume" in str(e.value)
    assert not (tmp_path / "out").exists()
