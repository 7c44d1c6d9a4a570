"""s1K-format SFT data: rows -> tokenized examples -> samples -> per-rank micro-batches.

Pipeline (all deterministic):
  load_rows(path)           a `datasets` dataset saved to disk, a hub name, or .json/.jsonl/.parquet
  tokenize_rows(rows, tok)  s1 template + loss mask (s1/model/tokenizer.py), next-token labels,
                            over-long examples truncated or dropped (counted in DataStats)
  make_samples(examples)    one sequence per sample (s1's layout) or best-fit packing into block_size
  BatchPlan                 per (epoch, step, rank): shuffled by (seed, epoch), split across ranks
                            and into micro-batches in the packed varlen layout (ids [T], cu_seqlens)

Labels follow HF causal-LM semantics: label[t] = ids[t+1] if loss_mask[t+1] else -100 (ignored);
the last token of every sequence has no label, so packed sequences never predict each other.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from s1.common.jsonl import JsonlError, read_jsonl

IGNORE_INDEX = -100
THINKING_COLUMNS = ("thinking_trajectories", "deepseek_thinking_trajectory")
ATTEMPT_COLUMNS = ("attempt", "deepseek_attempt")


class DataError(ValueError):
    """A problem with the training data; the message names the row and the problem."""


# ----------------------------------------------------------------------------- loading
def load_rows(source, split: str = "train") -> list[dict]:
    """Rows (dicts) from a path or hub name, or a list of dicts passed through.

    - directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (split picked)
    - file: .json (a list of objects, or {"train": [...]}), .jsonl, .parquet
    - anything else that is not an existing path: a Hugging Face hub dataset name
    """
    if isinstance(source, (list, tuple)):
        rows = list(source)
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise DataError(f"row {i}: expected a dict with s1K columns, got {type(r).__name__}")
        return rows
    path = os.fspath(source)
    if os.path.isdir(path):
        import datasets
        if not (os.path.exists(os.path.join(path, "dataset_info.json"))
                or os.path.exists(os.path.join(path, "dataset_dict.json"))):
            raise DataError(f"{path}: a directory but not a dataset written by datasets' save_to_disk "
                            "(no dataset_info.json / dataset_dict.json)")
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {sorted(ds)})")
            ds = ds[split]
        return [dict(r) for r in ds]
    if os.path.isfile(path):
        low = path.lower()
        if low.endswith(".jsonl"):
            try:
                return load_rows(read_jsonl(path))
            except JsonlError as e:
                raise DataError(str(e)) from None
        if low.endswith(".json"):
            try:
                with open(path) as f:
                    obj = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: invalid JSON ({e})") from e
            if isinstance(obj, dict):
                if split in obj and isinstance(obj[split], list):
                    obj = obj[split]
                elif all(isinstance(v, list) for v in obj.values()):  # columnar {"question": [...], ...}
                    n = {len(v) for v in obj.values()}
                    if len(n) != 1:
                        raise DataError(f"{path}: columns of different lengths {sorted(n)}")
                    obj = [dict(zip(obj, vals)) for vals in zip(*obj.values())]
            if not isinstance(obj, list):
                raise DataError(f"{path}: expected a JSON list of rows")
            return load_rows(obj)
        if low.endswith(".parquet"):
            import pyarrow.parquet as pq
            return load_rows(pq.read_table(path).to_pylist())
        raise DataError(f"{path}: unsupported file type (expected .json, .jsonl, .parquet or a "
                        "save_to_disk directory)")
    if path.lower().endswith((".json", ".jsonl", ".parquet")) or path.startswith((".", "/", "~")):
        raise DataError(f"{path}: no such file or directory")
    from s1.common.hub import load_hub_dataset   # a hub name such as simplescaling/s1K
    try:
        ds = load_hub_dataset(path, split=split)
    except Exception as e:
        raise DataError(f"{path!r} is not a local path, and loading it from the hub failed: {e}") from e
    return [dict(r) for r in ds]


def _pick_column(row: dict, choices, forced: str | None, i: int, what: str) -> str:
    """The column holding `what`: `forced` when given, else the first of `choices` with a value.
    A column that is present but null is reported as null, not as missing."""
    if forced is not None:
        if forced not in row:
            raise DataError(f"row {i}: missing column {forced!r} ({what}); row has {sorted(row)}")
        if row[forced] is None:
            raise DataError(f"row {i}: column {forced!r} ({what}) is null")
        return forced
    for c in choices:
        if c in row and row[c] is not None:
            return c
    nulls = [c for c in choices if c in row]
    if nulls:
        raise DataError(f"row {i}: column {' and '.join(map(repr, nulls))} ({what}) is null; "
                        f"no other of {', '.join(map(repr, choices))} has a value")
    raise DataError(f"row {i}: missing column {' or '.join(map(repr, choices))} ({what}); "
                    f"row has {sorted(row)}")


def _text(value, i: int, col: str) -> str:
    # s1K stores thinking_trajectories as a list of one string: join and strip (as s1's data prep).
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise DataError(f"row {i}: column {col!r} is a list with non-string items")
        value = "\n".join(value).strip()
    if not isinstance(value, str):
        raise DataError(f"row {i}: column {col!r} must be a string (or list of strings), "
                        f"got {type(value).__name__}")
    return value


def strip_attempt(attempt: str) -> str:
    """The attempt as s1's data preparation renders it: s1 prepends "Answer: " (when the attempt
    has no "Answer:") and strips the result, so the attempt loses its trailing whitespace, and its
    leading whitespace too when nothing is prepended (s1/model/tokenizer.py prepends the same prefix)."""
    return attempt.strip() if "Answer:" in attempt else attempt.rstrip()


def extract_fields(row: dict, i: int, thinking_column: str | None = None,
                   attempt_column: str | None = None) -> tuple[str, str, str]:
    """(question, thinking, attempt) of row `i`, validated."""
    if "question" not in row:
        raise DataError(f"row {i}: missing column 'question'; row has {sorted(row)}")
    if row["question"] is None:
        raise DataError(f"row {i}: column 'question' is null")
    question = _text(row["question"], i, "question")
    tcol = _pick_column(row, THINKING_COLUMNS, thinking_column, i, "reasoning trace")
    acol = _pick_column(row, ATTEMPT_COLUMNS, attempt_column, i, "final answer")
    thinking = _text(row[tcol], i, tcol).strip()   # s1 strips the (joined) trace
    attempt = strip_attempt(_text(row[acol], i, acol))
    if not question.strip():
        raise DataError(f"row {i}: empty question")
    if not thinking.strip():
        raise DataError(f"row {i}: empty thinking trace in column {tcol!r}")
    if not attempt.strip():
        raise DataError(f"row {i}: empty attempt in column {acol!r}")
    return question, thinking, attempt


# ----------------------------------------------------------------------------- tokenizing
@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # same length as ids, IGNORE_INDEX where not trained
    row: int  # source row index
    n_trained: int = 0

    def __post_init__(self):
        self.n_trained = sum(1 for x in self.labels if x != IGNORE_INDEX)

    def __len__(self):
        return len(self.ids)


@dataclass
class DataStats:
    rows: int = 0
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens_cut: int = 0  # tokens removed by truncation
    max_len: int = 0

    def summary(self) -> str:
        return (f"{self.rows} rows -> {self.examples} examples, {self.tokens:,} tokens "
                f"({self.trained_tokens:,} trained), longest {self.max_len}; "
                f"{self.truncated} truncated ({self.tokens_cut:,} tokens cut), {self.dropped} dropped")


def completion_mask(mask: list[bool]) -> list[bool]:
    """s1's completion-only collator (trl's DataCollatorForCompletionOnlyLM, response template
    "<|im_start|>assistant\n") trains every token after the response template to the end of the
    text, so also the "\n" that the chat template puts after the final <|im_end|>: extend the
    assistant mask from its first token to the end."""
    try:
        first = mask.index(True)
    except ValueError:
        return list(mask)
    return [False] * first + [True] * (len(mask) - first)


def shift_labels(ids: list[int], loss_mask: list[bool]) -> list[int]:
    """HF causal-LM labels: token t predicts ids[t+1] when that token is trained."""
    n = len(ids)
    return [ids[t + 1] if loss_mask[t + 1] else IGNORE_INDEX for t in range(n - 1)] + [IGNORE_INDEX]


def tokenize_rows(rows: list[dict], tokenizer, block_size: int, overlong: str = "truncate",
                  system: str | None = None, thinking_column: str | None = None,
                  attempt_column: str | None = None, progress: bool = False) -> tuple[list[Example], DataStats]:
    """Render every row with the s1 template; truncate to / drop beyond `block_size` tokens."""
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong={overlong!r}: expected 'truncate' or 'drop'")
    if block_size < 2:
        raise ValueError(f"block_size={block_size} must be >= 2")
    if not rows:
        raise DataError("the dataset has no rows")
    stats = DataStats(rows=len(rows))
    examples = []
    it = rows
    if progress:
        from tqdm import tqdm
        it = tqdm(rows, desc="tokenize", unit="row")
    for i, row in enumerate(it):
        q, th, at = extract_fields(row, i, thinking_column, attempt_column)
        ids, mask = tokenizer.encode_example(q, th, at, system=system)
        mask = completion_mask(mask)
        if len(ids) > block_size:
            if overlong == "drop":
                stats.dropped += 1
                continue
            stats.truncated += 1
            stats.tokens_cut += len(ids) - block_size
            ids, mask = ids[:block_size], mask[:block_size]
        ex = Example(ids, shift_labels(ids, mask), row=i)
        if ex.n_trained == 0:  # truncation removed the whole assistant part: nothing to learn
            stats.dropped += 1
            continue
        examples.append(ex)
        stats.tokens += len(ex)
        stats.trained_tokens += ex.n_trained
        stats.max_len = max(stats.max_len, len(ex))
    stats.examples = len(examples)
    if not examples:
        raise DataError(f"no usable examples: all {len(rows)} rows were dropped (block_size={block_size})")
    return examples, stats


# ----------------------------------------------------------------------------- samples
def pack_best_fit(lengths: list[int], block_size: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: lists of example indices whose lengths sum <= block_size.

    Longest first; each goes into the open bin with the least room left that still fits it
    (ties: the earliest bin), else a new bin. Deterministic (stable sort by length, then index).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > block_size:
            raise ValueError(f"example {i} has {n} tokens > block_size {block_size}")
        best, best_room = -1, None
        for b, r in enumerate(room):
            if n <= r and (best_room is None or r < best_room):
                best, best_room = b, r
        if best < 0:
            bins.append([i])
            room.append(block_size - n)
        else:
            bins[best].append(i)
            room[best] -= n
    return bins


def make_samples(examples: list[Example], block_size: int, pack: bool) -> list[list[int]]:
    """A sample is a list of example indices: one each (s1), or a packed block."""
    if not pack:
        return [[i] for i in range(len(examples))]
    return pack_best_fit([len(e) for e in examples], block_size)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [T] int64, sequences concatenated
    labels: torch.Tensor  # [T] int64, IGNORE_INDEX where not trained
    cu_seqlens: torch.Tensor  # [B+1] int32
    max_seqlen: int
    n_tokens: int
    n_trained: int
    n_seqs: int
    seq_lens: list[int] = field(default_factory=list)
    weight: float = 1.0  # 0.0 for a filler micro-batch that keeps FSDP collectives in lockstep

    def to(self, device) -> "MicroBatch":
        return MicroBatch(self.input_ids.to(device, non_blocking=True), self.labels.to(device, non_blocking=True),
                          self.cu_seqlens.to(device, non_blocking=True), self.max_seqlen, self.n_tokens,
                          self.n_trained, self.n_seqs, self.seq_lens, self.weight)


def collate(examples: list[Example], weight: float = 1.0) -> MicroBatch:
    """Concatenate sequences into the packed varlen layout (no padding, no cross attention)."""
    lens = [len(e) for e in examples]
    ids = torch.tensor([t for e in examples for t in e.ids], dtype=torch.long)
    labels = torch.tensor([t for e in examples for t in e.labels], dtype=torch.long)
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    return MicroBatch(ids, labels, cu, max(lens), sum(lens), sum(e.n_trained for e in examples),
                      len(examples), lens, weight)


def hash_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(n): indices sorted by the 8-byte BLAKE2b digest of
    "s1-train:{seed}:{epoch}:{i}" (ties, never seen in practice, by index). Stable across numpy,
    torch and Python versions."""
    import hashlib

    def key(i: int):
        return hashlib.blake2b(f"s1-train:{seed}:{epoch}:{i}".encode(), digest_size=8).digest(), i
    return np.array(sorted(range(n), key=key), dtype=np.int64)


class BatchPlan:
    """Which samples each rank trains on at each step; a pure function of (seed, epoch, step).

    Epoch order: the samples sorted by BLAKE2b(seed, epoch, index) (`hash_permutation`): fixed by
    the hash's definition, not by a library's RNG stream (numpy does not promise to keep
    Generator.permutation's output across versions).
    Step b of an epoch takes samples [b*G, (b+1)*G) of that order (G = global batch in samples;
    the last step of an epoch may be smaller, as HF's Trainer without drop_last: s1's 1,000
    examples at G=16 give 63 steps/epoch, 315 in all). Rank r gets every world-th sample from r,
    cut into micro-batches of `micro_batch_size` samples. Every rank runs the same number of
    micro-batches per step (FSDP collectives must match); a rank that runs out of samples in a
    short last step repeats one with weight 0.
    """

    def __init__(self, examples: list[Example], samples: list[list[int]], global_batch_size: int,
                 micro_batch_size: int, world_size: int, seed: int):
        if global_batch_size % (micro_batch_size * world_size):
            raise ValueError(f"global batch {global_batch_size} must be a multiple of micro batch "
                             f"{micro_batch_size} x world size {world_size}")
        self.examples, self.samples = examples, samples
        self.G, self.mbs, self.world, self.seed = global_batch_size, micro_batch_size, world_size, seed
        self.accum = global_batch_size // (micro_batch_size * world_size)
        self.steps_per_epoch = math.ceil(len(samples) / global_batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return hash_permutation(len(self.samples), self.seed, epoch)

    def step_samples(self, epoch: int, step_in_epoch: int) -> list[int]:
        o = self.order(epoch)
        return [int(s) for s in o[step_in_epoch * self.G:(step_in_epoch + 1) * self.G]]

    def micro_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[MicroBatch]:
        glob = self.step_samples(epoch, step_in_epoch)
        mine = glob[rank::self.world]
        n_micro = max(math.ceil(len(glob[r::self.world]) / self.mbs) for r in range(self.world))
        out = []
        for m in range(n_micro):
            chunk = mine[m * self.mbs:(m + 1) * self.mbs]
            if chunk:
                out.append(collate([self.examples[i] for s in chunk for i in self.samples[s]]))
            else:  # filler: same shapes as a real sample, contributes exactly zero gradient
                out.append(collate([self.examples[i] for i in self.samples[glob[0]]], weight=0.0))
        return out
