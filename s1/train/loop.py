"""The SFT loop: s1's recipe on FSDP2, one function `train(TrainConfig)`.

Per optimizer step:
  1. the BatchPlan gives this rank its micro-batches (packed varlen layout, no padding);
  2. the global normalizer is all-reduced *before* any backward: the number of trained tokens
     (token weighting) or of sequences (s1's per-sequence weighting) over all micro-batches and
     ranks;
  3. each micro-batch: loss = model(..., labels=...) (summed token CE through the fused linear
     cross-entropy: the [T, vocab] logits are never materialized) / normalizer, backward; FSDP2
     reduce-scatters with a plain SUM, so the accumulated sharded gradient is exactly the
     gradient of the global mean (not an average of per-rank or per-micro-batch averages);
  4. non-finite loss or grad norm -> TrainingDiverged (no update, no checkpoint: the last good
     checkpoint stays); clip to max_grad_norm; AdamW at lr(step) (linear warmup, cosine to 0);
  5. metrics line (loss, lr, grad norm, tokens/s, MFU) and, every save_every steps, an atomic
     sharded checkpoint. At the end the full model is exported in HF format to `out`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from s1.common import dtypes, profiling
from s1.kernels import get_ops
from s1.model.config import Qwen2Config
from s1.model.qwen2 import Qwen2ForCausalLM
from s1.train import checkpoint as ckpt
from s1.train.data import BatchPlan, load_rows, make_samples, tokenize_rows
from s1.train.metrics import MetricsLog, peak_flops, train_flops
from s1.train.parallelize import apply_activation_checkpointing, build_mesh, parallelize
from s1.train.ranks import RankFailed, agree, agree_on, on_rank0

SHARED_CHECK = ".s1-train-shared-check-"  # + nonce: the file every rank must read at start



class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainConfig:
    data: object  # path / hub name / list of row dicts
    out: str
    model: str | None = None  # HF checkpoint dir to fine-tune
    init_config: str | dict | Qwen2Config | None = None  # or: a config for random init (from scratch)
    tokenizer: object = None  # dir or model.tokenizer.Tokenizer; default: the --model dir
    # data
    block_size: int = 32768
    pack: bool = False
    overlong: str = "truncate"  # or "drop"
    split: str = "train"
    thinking_column: str | None = None
    attempt_column: str | None = None
    system_prompt: str | None = None
    thinking_format: str = "auto"   # s1 | think | auto (from the tokenizer): how examples are rendered
    # optimization (s1 defaults)
    epochs: int = 5
    global_batch_size: int = 16  # samples (sequences, or packed blocks with --pack) per step
    micro_batch_size: int = 1  # samples per forward on one rank
    lr: float = 1e-5
    betas: tuple = (0.9, 0.95)
    adam_eps: float = 1e-8
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    # "sequence" (s1): every sequence weighs the same, the mean over the global batch of each
    # sequence's token-mean loss (s1 trains one sequence per GPU; with packing or several
    # sequences per micro-batch each sequence is still its own mean, see PerSequenceOps);
    # "token": the mean over all trained tokens of the global batch (long sequences weigh more).
    loss_weighting: str = "sequence"
    max_steps: int | None = None  # caps the schedule (as HF max_steps)
    stop_after: int | None = None  # stop (and save) after this step without changing the schedule
    seed: int = 42
    init_seed: int | None = None  # random-init seed (default: seed)
    # systems
    dtype: str = "auto"  # compute dtype: auto = bf16 on CUDA, fp32 on CPU; master weights are fp32
    grad_ckpt: bool = False
    device: str | None = None  # default: cuda:LOCAL_RANK if available, else cpu
    # checkpoints and logs
    save_every: int = 0  # steps; 0 = only the final export
    keep_checkpoints: int = 1
    # False: a fresh run (refused in a used --out unless overwrite); True: continue from the latest
    # complete checkpoint (an error without one); "auto": continue if there is one, else start
    # fresh, so one command serves the first launch and every requeue.
    resume: bool | str = False
    overwrite: bool = False  # a fresh run in a used --out (its checkpoints go once the new run saves)
    dist_timeout_s: float = 3600.0  # process-group timeout: covers the slow I/O phases (load, save, export)
    export: bool = True
    export_dtype: str | None = None  # default: the config's torch_dtype
    metrics_file: str | None = None  # default: <out>/metrics.jsonl
    peak_tflops: float | None = None  # for MFU on devices not in metrics.PEAK_BF16_TFLOPS
    progress: bool = True

    def __post_init__(self):
        if (self.model is None) == (self.init_config is None):
            raise ValueError("give exactly one of model (a checkpoint dir) and init_config (random init)")
        for f in ("block_size", "epochs", "global_batch_size", "micro_batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f}={getattr(self, f)} must be >= 1")
        if self.loss_weighting not in ("token", "sequence"):
            raise ValueError(f"loss_weighting={self.loss_weighting!r}: expected 'token' or 'sequence'")
        if self.overlong not in ("truncate", "drop"):
            raise ValueError(f"overlong={self.overlong!r}: expected 'truncate' or 'drop'")
        self.dtype = dtypes.canonical(self.dtype, allow_auto=True)
        if self.export_dtype is not None:
            self.export_dtype = dtypes.canonical(self.export_dtype)
        if not (0.0 <= self.warmup_ratio < 1.0):
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.lr < 0:
            raise ValueError(f"lr={self.lr} must be >= 0")
        self.betas = tuple(self.betas)
        if self.resume not in (False, True, "auto"):
            raise ValueError(f"resume={self.resume!r}: expected False, True or 'auto'")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the run in out, "
                             "overwrite starts a new one there")
        if not self.dist_timeout_s > 0:
            raise ValueError(f"dist_timeout_s={self.dist_timeout_s} must be > 0")

    # Settings that define the training trajectory: a resume must not change them.
    TRAJECTORY = ("block_size", "pack", "overlong", "epochs", "global_batch_size", "lr", "betas",
                  "weight_decay", "warmup_ratio", "max_grad_norm", "loss_weighting", "max_steps", "seed")


def lr_lambda(step: int, total: int, warmup: int) -> float:
    """HF get_cosine_schedule_with_warmup (what s1 used): linear warmup from 0, cosine to 0."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class PerSequenceOps:
    """The model's op namespace with a per-sequence linear cross-entropy: the summed CE of each
    sequence of a packed micro-batch divided by its trained-token count, summed over sequences
    (s1's per-sequence mean, whatever the packing). Each sequence's rows go through the fused
    kernel on their own, so logits are still never materialized; the cost is one [V, H] gradient
    buffer per sequence of the micro-batch held until backward (see `s1 train --plan`)."""

    def __init__(self, base, cu_seqlens: list[int], n_trained: list[int]):
        self._base, self._cu, self._n = base, cu_seqlens, n_trained

    def __getattr__(self, name):
        return getattr(self._base, name)

    def linear_cross_entropy(self, hidden, weight, labels, ignore_index: int = -100):
        total = None
        for s, n in enumerate(self._n):
            if n == 0:
                continue
            a, b = self._cu[s], self._cu[s + 1]
            part = self._base.linear_cross_entropy(hidden[a:b], weight, labels[a:b], ignore_index) / n
            total = part if total is None else total + part
        return total if total is not None else hidden.sum() * 0.0


def _sequence_trained(mb) -> list[int]:
    cu = mb.cu_seqlens.tolist()
    lab = mb.labels
    return [int((lab[cu[s]:cu[s + 1]] != -100).sum()) for s in range(len(cu) - 1)]


# ----------------------------------------------------------------------------- setup helpers
def _init_distributed(device_type: str, timeout_s: float = 3600.0) -> tuple[int, int, int, bool]:
    """(rank, world, local_rank, created). torchrun sets RANK/WORLD_SIZE; otherwise a 1-rank group
    on an in-memory store, so the same FSDP code path runs in-process (tests, the demo)."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        local = int(os.environ.get("LOCAL_RANK", 0))
        from datetime import timedelta
        kw = {"timeout": timedelta(seconds=timeout_s)}
        if device_type == "cuda":
            torch.cuda.set_device(local)
            kw["device_id"] = torch.device("cuda", local)
        dist.init_process_group(backend, **kw)
        return dist.get_rank(), dist.get_world_size(), local, True
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return 0, 1, 0, True


def _model_config(cfg: TrainConfig) -> Qwen2Config:
    if cfg.model is not None:
        return Qwen2Config.from_pretrained(cfg.model)
    ic = cfg.init_config
    if isinstance(ic, Qwen2Config):
        return ic
    if isinstance(ic, dict):
        return Qwen2Config.from_dict(ic)
    return Qwen2Config.from_pretrained(ic)


def _tokenizer(cfg: TrainConfig):
    from s1.model.tokenizer import Tokenizer
    tok = cfg.tokenizer
    if tok is None:
        if cfg.model is None:
            raise ValueError("training from --init-config needs --tokenizer DIR")
        tok = cfg.model
    if isinstance(tok, (str, os.PathLike)):
        tok = Tokenizer.from_pretrained(tok)
        if cfg.thinking_format != "auto":   # else the tokenizer's own (detected) format
            from s1.model import thinking
            tok.thinking_format = thinking.resolve(tok, cfg.thinking_format)
    return tok


def _full_state_dict_rank0(cfg: TrainConfig, mcfg: Qwen2Config, rank: int) -> dict:
    """A random init's fp32 weights on rank 0's CPU (others get {} and their shards by broadcast)."""
    if rank != 0:
        return {}
    with torch.device("meta"):  # skip nn.Module's own init: init_weights overwrites every tensor
        m = Qwen2ForCausalLM(mcfg)
    m.to_empty(device="cpu").float()
    m.init_weights(seed=cfg.seed if cfg.init_seed is None else cfg.init_seed)
    return m.state_dict()


def build_model(cfg: TrainConfig, mcfg: Qwen2Config, device: torch.device, rank: int, world: int,
                compute_dtype: torch.dtype) -> Qwen2ForCausalLM:
    """Meta-device model -> parallelize -> materialize fp32 shards -> fill from rank 0.

    One process on CPU in fp32 (the demo, the tests) skips the FSDP wrapping: sharding over one
    rank is the identity and the reduction a no-op, so the math is the same, but FSDP2's per-unit
    hooks and copies cost ~14 ms of a 0.14 s demo step on one core (issue 25, bench/NOTES.md).
    Every multi-rank run, and any GPU or mixed-precision run, stays FSDP2."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    with torch.device("meta"):
        model = Qwen2ForCausalLM(mcfg)
    model.float()
    single = world == 1 and device.type == "cpu" and compute_dtype == torch.float32
    if single:
        if cfg.grad_ckpt:
            apply_activation_checkpointing(model)
    else:
        parallelize(model, build_mesh(device.type, world),
                    param_dtype=None if compute_dtype == torch.float32 else compute_dtype,
                    reduce_dtype=torch.float32, grad_ckpt=cfg.grad_ckpt)
    model.to_empty(device=device)
    if cfg.model is not None:
        # Every rank reads only the rows of its own shards (no full copy on any host, no rank
        # waiting for another to load the whole checkpoint); every rank learns of any failure.
        from s1.train.weights import load_sharded
        try:
            load_sharded(model, cfg.model, mcfg)
            err = None
        except Exception as e:  # noqa: BLE001 - re-raised below
            err = e
        agree_on(err, f"loading {cfg.model}")
        return model.train()
    # Random init (from scratch: small models): rank 0 draws the full tensors, the others get
    # their shards by broadcast.
    try:
        full, err = _full_state_dict_rank0(cfg, mcfg, rank), None
    except Exception as e:  # noqa: BLE001 - re-raised below
        full, err = {}, e
    agree_on(err, "initializing the weights")
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=not single))
    del full
    return model.train()


def build_optimizer(cfg: TrainConfig, model, device: torch.device) -> torch.optim.AdamW:
    # No weight decay on biases and norm weights (1-D), as HF Trainer's decay parameter names.
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, **kw)


def _trim_metrics(path: str, last_step: int) -> None:
    """On resume, drop log lines of steps after the checkpoint (they are about to be redone) and
    a torn last line (a kill mid-write)."""
    from s1.common.jsonl import read_jsonl, write_jsonl
    if not os.path.exists(path):
        return
    rows = read_jsonl(path, tolerate_truncated_tail=True)
    write_jsonl(path, [r for r in rows if r.get("step", 0) <= last_step])


def _out_in_use(out: str, ckpt_root: str, metrics_path: str) -> list[str]:
    """What in `out` belongs to an earlier run (empty: a fresh run may use it)."""
    used = []
    if os.path.isfile(metrics_path) and os.path.getsize(metrics_path) > 0:
        used.append(os.path.basename(metrics_path))
    if os.path.isdir(ckpt_root) and any(ckpt._ENTRY_RE.fullmatch(n) for n in os.listdir(ckpt_root)):
        used.append("checkpoints/")
    used += [n for n in ("model.safetensors", "model.safetensors.index.json") if os.path.exists(os.path.join(out, n))]
    return used


def _set_aside(path: str) -> str:
    """Rename an earlier run's log to a free `path.N.prev` (never truncated, never deleted)."""
    n = 1
    while os.path.exists(f"{path}.{n}.prev"):
        n += 1
    os.replace(path, f"{path}.{n}.prev")
    return f"{path}.{n}.prev"


def _prepare_out(cfg: "TrainConfig", ckpt_root: str, metrics_path: str) -> tuple[str | None, str]:
    """Rank 0, before any work: the restart decision and the shared-storage nonce.
    -> (the checkpoint to resume from or None, the nonce). Refusals change nothing in `out`."""
    import secrets
    latest = ckpt.latest_checkpoint(ckpt_root)
    if cfg.resume is True and latest is None:
        raise ValueError(f"--resume: no complete checkpoint in {ckpt_root} (the checkpoints folder of "
                         f"--out {cfg.out}); run without --resume (or with --resume auto) to start from step 0")
    path = latest if cfg.resume else None
    if not cfg.resume:
        used = _out_in_use(cfg.out, ckpt_root, metrics_path)
        if used and not cfg.overwrite:
            raise ValueError(f"--out {cfg.out} already holds a run ({', '.join(used)}); nothing was changed. "
                             "Continue it with --resume auto (or --resume), or start a new run there with "
                             "--overwrite (its checkpoints are replaced only once the new run has saved)")
    os.makedirs(cfg.out, exist_ok=True)
    if path is None and os.path.isfile(metrics_path) and os.path.getsize(metrics_path) > 0:
        print(f"[train] earlier metrics kept as {_set_aside(metrics_path)}")
    with open(metrics_path, "a"):  # fails here (every rank told) rather than after the first step
        pass
    nonce = secrets.token_hex(16)
    with open(os.path.join(cfg.out, SHARED_CHECK + nonce), "w") as f:
        f.write(nonce)
        f.flush()
        os.fsync(f.fileno())
    return path, nonce


def _check_shared_out(cfg: "TrainConfig", nonce: str, rank: int) -> None:
    """Every rank reads the nonce rank 0 wrote into --out: checkpoints need one folder seen by all."""
    f = os.path.join(cfg.out, SHARED_CHECK + nonce)
    try:
        with open(f) as fh:
            ok = fh.read() == nonce
        why = "" if ok else f"{f} holds another value"
    except OSError as e:
        ok, why = False, f"cannot read {f} ({e.strerror})"
    try:
        agree(ok, why, "the shared-storage check of --out")
    except RankFailed as e:
        raise ValueError(f"--out must be a folder on storage shared by every rank (every node), given as the "
                         f"same path: rank 0 wrote a check file into --out {cfg.out} that other ranks could not "
                         f"read. {e}") from None
    finally:
        if rank == 0:
            try:
                os.unlink(f)
            except OSError:
                pass


def load_rows_once(data, split: str):
    """The rows on every rank; a Hub dataset is downloaded once: rank 0 first (the others wait),
    then the first rank of every other node (a node-local HF cache), then all the rest, reading
    the cache. A failed download stops every rank with rank 0's error."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    local_path = isinstance(data, (list, tuple)) or os.path.exists(os.fspath(data))
    if world == 1 or local_path:
        return load_rows(data, split)
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    rows = None
    for phase in (0, 1, 2):
        mine = (rank == 0) if phase == 0 else (rank != 0 and (local_rank == 0) == (phase == 1))
        err = None
        if mine:
            try:
                rows = load_rows(data, split)
            except Exception as e:  # noqa: BLE001 - re-raised below (every rank hears of it)
                err = e
        agree_on(err, f"loading the dataset {data!r}")
    return rows


# ----------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> dict:
    """Run SFT. Works under torchrun (any world size) and in-process (world size 1).

    Returns {"losses": [...], "steps": int, "total_steps": int, "stats": DataStats, "out": str,
    "metrics_file": str, "exported": bool}; the trained model is the HF export in `out`.
    """
    if cfg.device is not None:
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        device = torch.device("cpu")
    rank, world, local_rank, created_pg = _init_distributed(device.type, cfg.dist_timeout_s)
    if device.type == "cuda" and cfg.device is None:
        device = torch.device("cuda", local_rank)
    try:
        return _train(cfg, device, rank, world)
    finally:
        if created_pg and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int) -> dict:
    is_main = rank == 0
    say = print if is_main else (lambda *a, **k: None)
    if cfg.dtype == "auto":
        compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        compute_dtype = dtypes.to_torch(cfg.dtype)
    torch.manual_seed(cfg.seed)
    ckpt_root = os.path.join(cfg.out, "checkpoints")
    metrics_path = cfg.metrics_file or os.path.join(cfg.out, "metrics.jsonl")
    # Before any work, decided by rank 0 for all: resume or start (a used --out is refused), then
    # every rank must see rank 0's files in --out.
    resume_from, nonce = on_rank0(lambda: _prepare_out(cfg, ckpt_root, metrics_path), "preparing --out")
    _check_shared_out(cfg, nonce, rank)

    # ---- data
    mcfg = _model_config(cfg)
    tok = _tokenizer(cfg)
    if tok.vocab_size > mcfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {mcfg.vocab_size}")
    rows = load_rows_once(cfg.data, cfg.split)
    examples, stats = tokenize_rows(rows, tok, cfg.block_size, cfg.overlong, cfg.system_prompt,
                                    cfg.thinking_column, cfg.attempt_column, progress=cfg.progress and is_main)
    samples = make_samples(examples, cfg.block_size, cfg.pack)
    plan = BatchPlan(examples, samples, cfg.global_batch_size, cfg.micro_batch_size, world, cfg.seed)
    total_steps = plan.steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    say(f"[train] data: {stats.summary()}")
    say(f"[train] {len(samples)} samples{' (packed)' if cfg.pack else ''}, {plan.steps_per_epoch} steps/epoch, "
        f"{total_steps} steps, warmup {warmup}, world {world} x micro {cfg.micro_batch_size} x accum {plan.accum}"
        f" = global {cfg.global_batch_size}")

    # ---- model, optimizer
    model = build_model(cfg, mcfg, device, rank, world, compute_dtype)
    optimizer = build_optimizer(cfg, model, device)
    n_params = mcfg.num_params()
    say(f"[train] model: {n_params / 1e6:.1f}M params, compute {str(compute_dtype).removeprefix('torch.')}, "
        f"master fp32, grad-ckpt {'on' if cfg.grad_ckpt else 'off'}, device {device.type}")

    start_step = 0
    run_id = {k: getattr(cfg, k) for k in TrainConfig.TRAJECTORY}
    # The data defines the trajectory too: a resume on different data (or tokenization) is refused.
    run_id["data_fingerprint"] = (stats.examples, stats.tokens, stats.trained_tokens, len(samples))
    if resume_from is not None:
        path = resume_from  # rank 0's choice: every rank loads the same checkpoint
        st = ckpt.load_checkpoint(path, model, optimizer)
        diff = {k: (st["config"].get(k), v) for k, v in run_id.items() if st["config"].get(k) != v}
        if diff:
            raise ValueError(f"--resume from {path}: settings differ from the checkpoint's "
                             f"(checkpoint, now): {diff}")
        start_step = st["step"]
        say(f"[train] resumed from {path} at step {start_step}")
        on_rank0(lambda: _trim_metrics(metrics_path, start_step), "trimming the metrics log")
    elif cfg.resume == "auto":
        say(f"[train] --resume auto: no complete checkpoint in {ckpt_root}, starting at step 0")

    peak = peak_flops(device, cfg.peak_tflops)
    log = MetricsLog(metrics_path, enabled=is_main)
    end_step = total_steps if cfg.stop_after is None else min(total_steps, cfg.stop_after)
    bar = None
    if cfg.progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    losses = []
    t_start = time.perf_counter()
    tokens_done = 0
    prof = profiling.active()      # phase ranges (s1/common/profiling.py): no-ops unless --profile/--timeline
    try:
        for step in range(start_step, end_step):
            t0 = time.perf_counter()
            prof.step_begin()
            data = prof.phase("data")
            data.__enter__()
            epoch, b = divmod(step, plan.steps_per_epoch)
            lr = cfg.lr * lr_lambda(step, total_steps, warmup)
            for g in optimizer.param_groups:
                g["lr"] = lr
            mbs = plan.micro_batches(epoch, b, rank)
            # Global normalizer, all-reduced before any backward (exact global mean).
            local = [sum(mb.n_trained * mb.weight for mb in mbs), sum(mb.n_seqs * mb.weight for mb in mbs),
                     sum(mb.n_tokens * mb.weight for mb in mbs)]
            counts = torch.tensor(local, dtype=torch.float64, device=device)
            dist.all_reduce(counts)
            g_trained, g_seqs, g_tokens = (int(x) for x in counts.tolist())
            denom = g_trained if cfg.loss_weighting == "token" else g_seqs
            loss_acc = torch.zeros((), dtype=torch.float32, device=device)
            data.__exit__(None, None, None)
            prof.note(kind="train", batch=g_seqs, tokens=g_tokens)
            prof.device_begin(device)
            for mb in mbs:
                with prof.phase("data"):
                    ops = None
                    if cfg.loss_weighting == "sequence" and mb.n_seqs > 1:
                        ops = PerSequenceOps(get_ops(device), mb.cu_seqlens.tolist(), _sequence_trained(mb))
                    mb = mb.to(device)
                with prof.phase("forward"):
                    ce_sum = model(mb.input_ids, cu_seqlens=mb.cu_seqlens, max_seqlen=mb.max_seqlen,
                                   labels=mb.labels, ops=ops)
                    if cfg.loss_weighting == "sequence" and mb.n_seqs == 1:
                        ce_sum = ce_sum / max(mb.n_trained, 1)
                    loss = ce_sum * (mb.weight / denom)
                with prof.phase("backward"):
                    loss.backward()
                loss_acc += loss.detach()
            opt = prof.phase("optimizer_step")
            opt.__enter__()
            dist.all_reduce(loss_acc)
            loss_val = float(loss_acc)
            if not math.isfinite(loss_val):
                raise TrainingDiverged(f"step {step + 1}: loss is {loss_val}; stopped before the update. "
                                       f"Last good checkpoint: {ckpt.latest_checkpoint(ckpt_root) or 'none'}")
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
            gn = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
            if not math.isfinite(gn):
                raise TrainingDiverged(f"step {step + 1}: gradient norm is {gn}; stopped before the update. "
                                       f"Last good checkpoint: {ckpt.latest_checkpoint(ckpt_root) or 'none'}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            prof.device_end(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            opt.__exit__(None, None, None)
            dt = time.perf_counter() - t0
            tokens_done += g_tokens
            seq_lens = [len(plan.examples[i]) for s in plan.step_samples(epoch, b) for i in plan.samples[s]]
            flops = train_flops(mcfg, seq_lens)
            rec = {"step": step + 1, "epoch": epoch + (b + 1) / plan.steps_per_epoch, "loss": loss_val,
                   "lr": lr, "grad_norm": gn, "tokens": g_tokens, "trained_tokens": g_trained, "seqs": g_seqs,
                   "step_time_s": dt, "tokens_per_s": g_tokens / dt,
                   "tflops_per_device": flops / dt / world / 1e12,
                   "mfu": (flops / dt / world / peak) if peak else None}
            if device.type == "cuda":
                rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            log.write(rec)
            losses.append(loss_val)
            if bar is not None:
                bar.update(1)
                post = {"loss": f"{loss_val:.4f}", "lr": f"{lr:.2e}", "gnorm": f"{gn:.3f}",
                        "tok/s": f"{rec['tokens_per_s']:.0f}"}
                if rec["mfu"] is not None:
                    post["mfu"] = f"{100 * rec['mfu']:.1f}%"
                bar.set_postfix(post)
            done = step + 1
            periodic = cfg.save_every and (done % cfg.save_every == 0 or done == end_step)
            if periodic or (done == end_step and end_step < total_steps):  # --stop-after: resumable
                train_state = {"step": done, "epoch": epoch, "step_in_epoch": b + 1, "total_steps": total_steps,
                               "warmup_steps": warmup, "lr_schedule": "linear_warmup_cosine",
                               "config": run_id, "world_size": world, "model_config": mcfg.to_dict()}
                with prof.phase("checkpoint"):
                    path = ckpt.save_checkpoint(ckpt_root, done, model, optimizer, train_state,
                                                keep=cfg.keep_checkpoints)
                if bar is not None:
                    bar.write(f"[train] saved {path}")
            prof.step_end()
    finally:
        if bar is not None:
            bar.close()
        log.close()
    wall = time.perf_counter() - t_start
    stopped_early = end_step < total_steps
    if losses:
        say(f"[train] steps {start_step + 1}-{end_step} of {total_steps}: final loss {losses[-1]:.4f}, "
            f"{tokens_done:,} tokens in {wall:.1f}s ({tokens_done / max(wall, 1e-9):,.0f} tok/s)")
    if cfg.export and not stopped_early:
        ex_dtype = dtypes.to_torch(cfg.export_dtype) if cfg.export_dtype else mcfg.dtype
        ckpt.export_hf(model, mcfg, cfg.out, tokenizer=tok, dtype=ex_dtype)
        say(f"[train] exported HF checkpoint ({str(ex_dtype).removeprefix('torch.')}) to {cfg.out}")
    return {"losses": losses, "steps": end_step, "total_steps": total_steps, "stats": stats,
            "out": cfg.out, "metrics_file": metrics_path, "exported": bool(cfg.export and not stopped_early)}
