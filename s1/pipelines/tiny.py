"""Train a tiny Qwen2 from scratch on toy rows, then sweep its thinking budget: the part the demo
(`s1 demo`) and the method comparison (`python -m bench.methods`) share.

    model_dir, res = train_tiny(rows, tokenizer, out / "model", {"steps": 1000, "batch": 32, "lr": 3e-3})
    summary = sweep(model_dir, items, make_points(["budget_forcing"], [0, 6, 12], [0]), out_dir=out / "eval")

`train_tiny` runs the SFT trainer (s1/train/) on s1K-format rows with a model built by
s1/pipelines/toy.py's `tiny_config` (its defaults: the demo's 3-layer, width-96 model), fp32, the
whole global batch in one micro-batch and the token-mean loss (a tiny model learns the toy task
fastest that way); `sweep` loads the exported checkpoint into the engine and runs an evaluation
sweep (s1/evaluation/sweep.py) over it, greedy, with a short answer cap (a toy answer is one digit).
"""
from __future__ import annotations

import math
from pathlib import Path

# settings keys of train_tiny: steps, batch, lr (required); seed, device, progress, and the model
# shape (hidden, layers, heads, kv, inter, max_pos; tiny_config's defaults when absent)
_SHAPE = {"hidden": "hidden_size", "layers": "num_layers", "heads": "num_heads", "kv": "num_kv_heads",
          "inter": "intermediate_size", "max_pos": "max_positions"}


def train_tiny(rows: list[dict], tokenizer, out, settings: dict) -> tuple[Path, dict]:
    """Train from scratch on `rows` (s1K schema) and export an HF checkpoint to `out`.
    Returns (model_dir, {"steps", "epochs", "final_loss", "model_config"})."""
    from s1.pipelines import toy
    from s1.train import TrainConfig, train

    s = settings
    mcfg = toy.tiny_config(tokenizer.vocab_size, **{v: s[k] for k, v in _SHAPE.items() if k in s})
    device = s.get("device", "cpu")
    steps_per_epoch = max(1, len(rows) // s["batch"])
    epochs = max(1, math.ceil(s["steps"] / steps_per_epoch))
    cfg = TrainConfig(data=rows, out=str(out), init_config=mcfg, tokenizer=tokenizer,
                      block_size=mcfg["max_position_embeddings"], epochs=epochs, global_batch_size=s["batch"],
                      micro_batch_size=s["batch"], loss_weighting="token", lr=s["lr"], weight_decay=1e-4,
                      warmup_ratio=0.05, max_steps=s["steps"], seed=s.get("seed", 0),
                      dtype="fp32" if str(device).startswith("cpu") else "auto", device=device, export=True,
                      export_dtype="fp32", progress=s.get("progress", True),
                      overwrite=True)   # every pipeline run re-makes all its stages, the model too
    res = train(cfg)
    return Path(out), {"steps": res["steps"], "epochs": epochs, "model_config": mcfg,
                       "final_loss": res["losses"][-1] if res["losses"] else None}


def sweep(model_dir, items, points, *, out_dir, task: str, model_label: str | None = None, seed: int = 0,
          device: str = "cpu", max_answer_tokens: int = 4, max_num_seqs: int = 512, progress: bool = True) -> dict:
    """Run `points` over `items` on the checkpoint in model_dir (greedy); writes the run files to
    out_dir and returns the summary (with "_timing")."""
    from s1.evaluation.sweep import run_eval
    from s1.infer import LLM, SamplingParams

    llm = LLM(str(model_dir), device=device, max_num_seqs=max_num_seqs)
    return run_eval(llm, items, points, samples=1, temperature=0.0, seed=seed,
                    base_params={"max_answer_tokens": max_answer_tokens}, out_dir=str(out_dir), task=task,
                    model=model_label or str(model_dir), sampling_params_cls=SamplingParams, progress=progress)
