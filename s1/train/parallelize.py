"""Apply activation checkpointing and FSDP2 to a single-device Qwen2ForCausalLM, from outside.

Order (as torchtitan's `parallelize_llama`):
  1. activation checkpointing: wrap each decoder layer (`checkpoint_wrapper`, non-reentrant), so
     only the layer inputs are kept and the layer is recomputed in backward. It must come before
     sharding so FSDP's unit is the wrapper and its all-gather happens once per recompute.
  2. `fully_shard` each decoder layer: one FSDP unit per layer (s1: "FSDP full shard, one unit per
     decoder layer"); parameters become DTensors sharded on dim 0 across the data-parallel mesh.
  3. `fully_shard` the root: embeddings, final norm and (untied) lm_head form the root unit.
Mixed precision: parameters stay fp32 (the master copy the optimizer updates); FSDP casts the
all-gathered copy to `param_dtype` (bf16 on GPU) for compute and reduces gradients in
`reduce_dtype` (fp32). On CPU tests everything is fp32.

Gradient reduction is a plain SUM (no 1/world averaging): the training loop divides the loss by
the global trained-token count itself, so the summed gradient is already the exact global mean.
Gloo has no PREMUL_SUM, so `set_force_sum_reduction_for_comms(True)` keeps the collectives plain SUM.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from s1.model.qwen2 import Qwen2ForCausalLM


def apply_activation_checkpointing(model: Qwen2ForCausalLM) -> None:
    """Replace every decoder layer by a checkpoint-wrapped one (parameter names are unchanged in
    state dicts: the wrapper strips its `_checkpoint_wrapped_module.` prefix)."""
    layers = model.model.layers
    for i, layer in enumerate(layers):
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)


def build_mesh(device_type: str, world_size: int) -> DeviceMesh:
    return init_device_mesh(device_type, (world_size,), mesh_dim_names=("dp",))


def parallelize(model: Qwen2ForCausalLM, mesh: DeviceMesh, *, param_dtype: torch.dtype | None = None,
                reduce_dtype: torch.dtype = torch.float32, grad_ckpt: bool = False,
                reshard_after_forward: bool = True) -> Qwen2ForCausalLM:
    """Activation checkpointing (optional) -> fully_shard per layer -> fully_shard root. In place.

    `model` may live on the meta device (materialize with `model.to_empty(...)` afterwards) or on
    the target device. param_dtype=None keeps compute in the parameter dtype (fp32 CPU tests).
    """
    if grad_ckpt:
        apply_activation_checkpointing(model)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    layers = model.model.layers
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again right at the start of backward: keep them.
        fully_shard(layer, mesh=mesh, mp_policy=mp,
                    reshard_after_forward=reshard_after_forward and i < len(layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    sum_reduction(model)
    return model


def fsdp_modules(model: nn.Module):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def sum_reduction(model: nn.Module) -> None:
    """Make every FSDP unit reduce gradients as a SUM over ranks (see module docstring)."""
    for m in fsdp_modules(model):
        m.set_force_sum_reduction_for_comms(True)
        m.set_gradient_divide_factor(1.0)
