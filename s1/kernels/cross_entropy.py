"""Fused linear + cross-entropy (Liger-style): loss and both gradients without [N, V] logits.

loss = sum_i CE(hidden_i @ weight.T, labels_i) over labels != ignore_index (sum reduction; the
trainer divides by its global token count).

Algorithm (Liger-Kernel's FusedLinearCrossEntropy): walk over the N tokens in chunks of C rows.
For each chunk
    logits = hidden_c @ weight.T                     [C, V] in the input dtype (cuBLAS)
    Triton row kernel: online max/sum-exp over V in fp32 -> loss_i = lse_i - logit[label_i], then
                       overwrite logits in place with d loss_i / d logits = softmax - onehot (0 for
                       ignored rows)
    grad_hidden_c  = dlogits @ weight                 [C, H]
    grad_weight   += dlogits.T @ hidden_c             [V, H]
so peak extra memory is one [C, V] chunk (+ the [V, H] weight-grad accumulator) instead of the
[N, V] logits, their fp32 copy, and the softmax. The gradients are computed in the forward (while
the chunk is live); backward only scales them by grad_output.

Numerics (documented choice, = HF / s1.kernels.reference): logits are produced in the input dtype
(bf16 matmul with fp32 accumulation, rounded to bf16), then upcast to fp32 for the softmax/loss.
dlogits is rounded to the input dtype before the two gradient matmuls (as Liger); grad_weight is
accumulated in the weight's dtype (fp32 for fp32 weights). Expected agreement with the reference:
fp32 ~1e-5 relative; fp16/bf16 loss ~1e-3 relative, gradients ~1e-2 relative.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from s1.kernels.triton_utils import check_device, interpreting


@triton.jit
def _ce_row_kernel(logits_ptr, labels_ptr, loss_ptr, V, stride_l, ignore_index,
                   BLOCK_V: tl.constexpr, WRITE_GRAD: tl.constexpr):
    # One program per token row: two passes over V (stats, then gradient), fp32 math.
    row = tl.cast(tl.program_id(0), tl.int64)
    base = logits_ptr + row * stride_l
    label = tl.load(labels_ptr + row).to(tl.int64)
    valid = label != ignore_index
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane running max
    s = tl.zeros([BLOCK_V], tl.float32)                # per-lane running sum of exp(x - m)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes that have seen only -inf (past the end of V) keep s = 0: subtract 0, not -inf
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_sub) + tl.exp(x - m_sub)
        m = m_new
    mx = tl.max(m, axis=0)
    tot = tl.sum(s * tl.exp(tl.where(m == float("-inf"), float("-inf"), m - mx)), axis=0)
    lse = mx + tl.log(tot)
    safe_label = tl.where(valid, label, 0)
    x_label = tl.load(base + safe_label).to(tl.float32)
    loss = tl.where(valid, lse - x_label, 0.0)
    tl.store(loss_ptr + row, loss)
    if WRITE_GRAD:
        scale = tl.where(valid, 1.0, 0.0)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            cmask = cols < V
            x = tl.load(base + cols, mask=cmask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse)
            g = (p - tl.where(cols == safe_label, 1.0, 0.0)) * scale
            tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cmask)


def _chunk_size(N: int, V: int, H: int) -> int:
    # Liger's rule: chunks of ~N / ceil(V / H) rows keep the [C, V] chunk near the size of hidden.
    inc = triton.cdiv(V, H)
    c = triton.next_power_of_2(triton.cdiv(N, inc))
    return max(1, min(c, 8192, triton.next_power_of_2(max(N, 1))))


def fused_linear_cross_entropy_fwd(hidden, weight, labels, ignore_index=-100, chunk_size=None,
                                   need_grad_hidden=True, need_grad_weight=True):
    """Returns (loss fp32 scalar, grad_hidden [N, H] or None, grad_weight [V, H] or None)."""
    if hidden.dim() != 2 or weight.dim() != 2 or labels.dim() != 1:
        raise ValueError(f"linear_cross_entropy: need hidden [N, H], weight [V, H], labels [N]; got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}")
    N, H = hidden.shape
    V = weight.shape[0]
    if weight.shape[1] != H:
        raise ValueError(f"linear_cross_entropy: weight {tuple(weight.shape)} does not match hidden size {H}")
    if labels.shape[0] != N:
        raise ValueError(f"linear_cross_entropy: {labels.shape[0]} labels for {N} tokens")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"linear_cross_entropy: hidden dtype {hidden.dtype} != weight dtype {weight.dtype}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"linear_cross_entropy: labels must be int64/int32, got {labels.dtype}")
    check_device("linear_cross_entropy", hidden, weight, labels)
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= V))
    if bool(bad.any()):  # one host sync per call; a wrong label would otherwise read out of bounds
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"linear_cross_entropy: label {int(labels[i])} at token {i} is outside [0, {V}) "
                         f"and is not ignore_index={ignore_index}")

    hidden = hidden.contiguous()
    labels = labels.contiguous()
    C = chunk_size or _chunk_size(N, V, H)
    write_grad = need_grad_hidden or need_grad_weight
    loss_rows = torch.empty(N, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if need_grad_hidden else None
    grad_weight = torch.zeros_like(weight) if need_grad_weight else None
    block_v = 1024 if interpreting() else 4096
    warps = 1 if interpreting() else 16
    for c0 in range(0, N, C):
        c1 = min(N, c0 + C)
        h_c = hidden[c0:c1]
        logits = h_c @ weight.t()  # [c, V] in the input dtype
        _ce_row_kernel[(c1 - c0,)](logits, labels[c0:c1], loss_rows[c0:c1], V, logits.stride(0), ignore_index,
                                   BLOCK_V=block_v, WRITE_GRAD=write_grad, num_warps=warps)
        if need_grad_hidden:
            torch.matmul(logits, weight, out=grad_hidden[c0:c1])
        if need_grad_weight:
            grad_weight.addmm_(logits.t(), h_c)
    return loss_rows.sum(), grad_hidden, grad_weight


class LinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index):
        loss, gh, gw = fused_linear_cross_entropy_fwd(
            hidden, weight, labels, ignore_index,
            need_grad_hidden=ctx.needs_input_grad[0], need_grad_weight=ctx.needs_input_grad[1])
        ctx.save_for_backward(gh, gw)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        gh, gw = ctx.saved_tensors
        # grad_out is a scalar (d total / d loss)
        if gh is not None:
            gh = gh * grad_out.to(gh.dtype)
        if gw is not None:
            gw = gw * grad_out.to(gw.dtype)
        return gh, gw, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        loss, _, _ = fused_linear_cross_entropy_fwd(hidden, weight, labels, ignore_index,
                                                   need_grad_hidden=False, need_grad_weight=False)
        return loss
    return LinearCrossEntropyFunction.apply(hidden, weight, labels, ignore_index)
