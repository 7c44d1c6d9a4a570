"""Which trace format of the demo's digit-sum task does a tiny Qwen2 learn in CPU minutes?

    python -m bench.demo_formats --fmt sepcopy --steps 1000          # the format the demo uses
    python -m bench.demo_formats --fmt fused --steps 2000 --lr 1e-2  # the old one (never learned)

A calibration harness for `s1 demo` (bench/NOTES.md, "Demo"): the same model class
(s1/model/qwen2.py, the demo's 3 x 96 shape), AdamW + warmup/cosine as the trainer, but a word-level
vocabulary, a fixed stand-in for the system prompt and fresh random problems every step, so one
run takes a minute or two. Formats (question -> thinking; digits 3 5 1):
  fused    "a3 b5 c1"     -> "a3 b8 c9"            marker+sum fused in one token per step
  copy     "a3 b5 c1"     -> "a3 =3 b5 =8 c1 =9"   restate the fused item, then the sum
  sep      "a 3 b 5 c 1"  -> "a 3 b 8 c 9"         marker and digit separate, sum after the marker
  sepcopy  "a 3 b 5 c 1"  -> "a 3 =3 b 5 =8 c 1 =9" separate tokens; restate, then the sum
  (s1/pipelines/toy.py's "a3=3 b5=8" tokenizes exactly as sepcopy)
Metric: the fraction of held-out problems whose every trace + answer token is argmax-correct
under teacher forcing (= greedy decoding gets the whole chain right), and token accuracy per
kind (item = restated marker/digit, sum, ans).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

FORMATS = ("fused", "copy", "sep", "sepcopy")
MARKERS = "abcdefghijklmnop"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.demo_formats", description=__doc__.split("\n\n")[0])
    p.add_argument("--fmt", choices=FORMATS, default="sepcopy")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-digits", type=int, default=8)
    p.add_argument("--gap", type=int, default=0, help="extra tokens between the trace and the answer")
    p.add_argument("--prefix", type=int, default=20, help="tokens standing in for the system prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--evals", type=int, default=10, help="evaluations during training")
    return p


class Task:
    def __init__(self, fmt: str, prefix: int, gap: int):
        self.fmt, self.prefix, self.gap = fmt, prefix, gap
        self.vocab: dict[str, int] = {}
        for w in ["<pad>", "<s>", "<q>", "<think>", "<ans>", "<end>"] + [f"P{i}" for i in range(prefix)]:
            self.id(w)
        for i, m in enumerate(MARKERS):
            self.id(m)
            for d in range(10):
                self.id(f"{m}{d}"), self.id(f"={d}"), self.id(str(d))
        for d in range(10):
            self.id(f"A{d}")
        self.words = {v: k for k, v in self.vocab.items()}

    def id(self, w: str) -> int:
        return self.vocab.setdefault(w, len(self.vocab))

    def example(self, digits: list[int]) -> tuple[list[int], int]:
        """(token ids, index of the first trained target)."""
        sums, s = [], 0
        for d in digits:
            s = (s + d) % 10
            sums.append(s)
        m = MARKERS
        if self.fmt in ("fused", "copy"):
            q = [f"{m[i]}{d}" for i, d in enumerate(digits)]
        else:
            q = [x for i, d in enumerate(digits) for x in (m[i], str(d))]
        t = {"fused": lambda: [f"{m[i]}{s}" for i, s in enumerate(sums)],
             "copy": lambda: [x for i, (d, s) in enumerate(zip(digits, sums)) for x in (f"{m[i]}{d}", f"={s}")],
             "sep": lambda: [x for i, s in enumerate(sums) for x in (m[i], str(s))],
             "sepcopy": lambda: [x for i, (d, s) in enumerate(zip(digits, sums)) for x in (m[i], str(d), f"={s}")],
             }[self.fmt]()
        pre = ["<s>"] + [f"P{i}" for i in range(self.prefix)] + ["<q>"]
        toks = pre + q + ["<think>"] + t + ["<ans>"] + [f"P{i}" for i in range(self.gap)] + [f"A{sums[-1]}", "<end>"]
        return [self.vocab[x] for x in toks], len(pre) + len(q) + 1

    def kind(self, tok: int) -> str:
        w = self.words[tok]
        if w[0] == "A":
            return "ans"
        if w[0] == "=" or (self.fmt == "sep" and w.isdigit()):
            return "sum"
        return "item" if (w[0] in MARKERS or w.isdigit()) else "other"


def run(a) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from s1.model.config import Qwen2Config
    from s1.model.qwen2 import Qwen2ForCausalLM

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    task = Task(a.fmt, a.prefix, a.gap)

    def batch(n, rng):
        rows = [task.example(rng.integers(0, 10, size=int(rng.integers(1, a.max_digits + 1))).tolist())
                for _ in range(n)]
        S = max(len(ids) for ids, _ in rows)
        x = torch.zeros(n, S, dtype=torch.long)
        y = torch.full((n, S), -100, dtype=torch.long)
        for i, (ids, st) in enumerate(rows):
            x[i, :len(ids)] = torch.tensor(ids)
            y[i, st - 1:len(ids) - 1] = torch.tensor(ids[st:])
        return x, y

    V = -(-len(task.vocab) // 64) * 64
    cfg = Qwen2Config.from_dict(dict(vocab_size=V, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                     rms_norm_eps=1e-6, rope_theta=1e4, tie_word_embeddings=True,
                                     torch_dtype="float32", initializer_range=0.02))
    model = Qwen2ForCausalLM(cfg)
    model.init_weights(seed=a.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=1e-4)
    warm = int(0.05 * a.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warm) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))
    rng, held_out = np.random.default_rng(a.seed), batch(512, np.random.default_rng(10_000 + a.seed))

    @torch.no_grad()
    def evaluate() -> dict:
        x, y = held_out
        pred = model(x).argmax(-1)
        tgt = y != -100
        kinds: dict[str, list[int]] = {}
        for t, p in zip(y[tgt].tolist(), pred[tgt].tolist()):
            k = kinds.setdefault(task.kind(t), [0, 0])
            k[0] += t == p
            k[1] += 1
        return {"solved": ((pred == y) | ~tgt).all(1).float().mean().item(),
                "token_acc": ((pred == y) & tgt).sum().item() / tgt.sum().item(),
                **{f"acc_{k}": round(v[0] / v[1], 3) for k, v in sorted(kinds.items())}}

    curve, t0 = [], time.perf_counter()
    for step in range(1, a.steps + 1):
        x, y = batch(a.batch, rng)
        loss = F.cross_entropy(model(x).view(-1, V), y.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, a.steps // a.evals) == 0 or step == a.steps:
            row = {"step": step, "loss": round(loss.item(), 4), **evaluate(), "s": round(time.perf_counter() - t0, 1)}
            curve.append(row)
            print(json.dumps(row), flush=True)
    return {"bench": "demo_formats", "settings": vars(a), "curve": curve, "final": curve[-1]}


def main(argv: list[str] | None = None) -> int:
    res = run(build_parser().parse_args(argv))
    print(json.dumps({"fmt": res["settings"]["fmt"], "final": res["final"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
