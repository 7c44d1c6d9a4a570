"""GPU memory plan of one training rank, per shape: every buffer that the FSDP2 trainer holds at
its peak, so a user knows before launching whether a run fits (`s1 train --plan`).

A model of what s1/train does (bf16 compute, fp32 masters, grads and Adam moments, FSDP2 with
one unit per decoder layer plus the root unit = embedding + final norm + lm_head, fused linear
cross-entropy), not a measurement. The peak is at the start of backward: every checkpointed layer
input is still held, the last layer is being recomputed, the lm_head gradient from the fused
cross-entropy waits in the root unit until the root's reduce-scatter at the end of backward.
"""
from __future__ import annotations

from dataclasses import dataclass

from s1.model.config import Qwen2Config

GiB = 2 ** 30


@dataclass
class Item:
    name: str
    bytes: float
    note: str


def layer_params(c: Qwen2Config) -> int:
    h = c.hidden_size
    return (h * c.q_size + c.q_size + 2 * (h * c.kv_size + c.kv_size) + c.q_size * h
            + 3 * h * c.intermediate_size + 2 * h)


def root_params(c: Qwen2Config) -> int:
    return c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2) + c.hidden_size


def memory_plan(c: Qwen2Config, world: int, tokens: int, *, grad_ckpt: bool = True, seqs: int = 1,
                compute_bytes: int = 2, context_gib: float = 1.5) -> list[Item]:
    """Items of the peak (start of backward) on one rank: `tokens` per micro-batch, `seqs`
    sequences in it (per-sequence loss weighting runs the fused CE once per sequence)."""
    n = c.num_params()
    P, R, L = layer_params(c), root_params(c), c.num_hidden_layers
    h, V, T, b = c.hidden_size, c.vocab_size, tokens, compute_bytes
    per_tok_layer = b * (4 * h + 2 * (c.q_size + 2 * c.kv_size) + 2 * c.q_size + 4 * c.intermediate_size)
    items = [
        Item("fp32 master weights (sharded)", 4 * n / world, f"4 B x {n / 1e9:.2f}B params / {world}"),
        Item("fp32 gradients (sharded)", 4 * n / world, "FSDP2 keeps the sharded grad in fp32 (reduce_dtype)"),
        Item("AdamW moments exp_avg + exp_avg_sq (sharded)", 8 * n / world, "2 x 4 B per param / world"),
        Item("root unit unsharded (embedding + lm_head + norm, bf16)", b * R,
             f"{R / 1e9:.2f}B params; the root stays gathered from forward to the end of backward"),
        Item("lm_head gradient [V, H] from the fused CE (bf16)", b * V * h * seqs,
             f"computed in forward, held to backward, then the root's unsharded grad; x{seqs} sequence(s); "
             "backward's gw * grad_out copies it once, briefly, before the recompute starts"),
        Item("fused CE hidden gradient [T, H] (bf16)", b * T * h, "held from forward to backward"),
        Item("decoder layer gathered, current + prefetched (bf16)", 2 * b * P, f"2 x {P / 1e6:.0f}M params"),
        Item("decoder layer unsharded grad (bf16) + its fp32 reduce-scatter input", (b + 4) * P,
             "one layer's gradient during backward"),
    ]
    if grad_ckpt:
        items += [Item("checkpointed layer inputs (bf16)", b * T * h * L, f"{L} layers x T x H"),
                  Item("one layer's recompute activations", per_tok_layer * T,
                       f"{per_tok_layer / 1e3:.0f} KB/token (qkv, attention out, MLP 4I, norms)")]
    else:
        items.append(Item("all layers' activations (no checkpointing)", per_tok_layer * T * L,
                          f"{per_tok_layer / 1e3:.0f} KB/token/layer x {L}"))
    items += [Item("embedding output + final hidden + norm (bf16)", 3 * b * T * h, "T x H each"),
              Item("CUDA context, NCCL buffers, allocator slack (estimate)", context_gib * GiB, "not computed")]
    return items


def end_of_backward(c: Qwen2Config, world: int, compute_bytes: int = 2) -> float:
    """At the root's reduce-scatter: the sharded state, the root's unsharded bf16 params and grads
    (embedding + lm_head) and their fp32 copy for the reduce-scatter (activations are gone)."""
    n, R = c.num_params(), root_params(c)
    return 16 * n / world + compute_bytes * R * 2 + 4 * R


def format_plan(c: Qwen2Config, world: int, tokens: int, gpu_gib: float, *, grad_ckpt: bool = True,
                seqs: int = 1, label: str = "") -> tuple[str, bool]:
    items = memory_plan(c, world, tokens, grad_ckpt=grad_ckpt, seqs=seqs)
    peak = sum(i.bytes for i in items)
    end = end_of_backward(c, world) + 1.5 * GiB
    worst = max(peak, end)
    fits = worst <= gpu_gib * GiB
    lines = [f"memory plan per GPU{(' (' + label + ')') if label else ''}: {c.num_params() / 1e9:.2f}B params, "
             f"FSDP over {world} ranks, {tokens:,} tokens per micro-batch, grad-ckpt {'on' if grad_ckpt else 'off'}, "
             f"bf16 compute, fp32 master/grads/Adam"]
    for i in items:
        lines.append(f"  {i.bytes / GiB:8.2f} GiB  {i.name}  ({i.note})")
    lines.append(f"  {peak / GiB:8.2f} GiB  peak at the start of backward")
    lines.append(f"  {end / GiB:8.2f} GiB  at the end of backward (root grads bf16 + fp32 reduce-scatter input)")
    lines.append(f"  -> {'fits' if fits else 'does NOT fit'} {gpu_gib:g} GiB "
                 f"({worst / GiB:.1f} GiB, headroom {(gpu_gib * GiB - worst) / GiB:.1f} GiB); an estimate, not a measurement")
    return "\n".join(lines), fits
