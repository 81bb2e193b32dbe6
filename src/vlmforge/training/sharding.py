"""Sharded training support shared by every family: FSDP2 per transformer block, 1-element scalars, and
the full weights of a sharded run gathered into one file for evaluation.

FSDP (Zhao et al. 2023) and ZeRO (Rajbhandari et al. 2020) split each parameter along its first dimension,
so a 0-d parameter (open_clip's ``logit_scale``, SigLIP's ``logit_bias``) cannot be sharded, and DeepSpeed
broadcasts parameters through byte views that 0-d tensors do not allow. Training modules therefore hold
such scalars as shape [1]: forward code that broadcasts a scalar is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlmforge.storage import writing


def promote_scalar_parameters(model: torch.nn.Module) -> None:
    """Replace every 0-d parameter of ``model`` by a shape-[1] parameter of the same value."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.ndim == 0:
                scalar = torch.nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad)
                setattr(module, name, scalar)


@torch.no_grad()
def clamp_parameter_(param: torch.nn.Parameter, low: float, high: float) -> None:
    """Clamp a parameter in place under any strategy; every rank calls it. FSDP shards are clamped where
    they live. DeepSpeed ZeRO optimises an fp32 copy split across ranks beside the working copy: both are
    clamped (under ZeRO-3 partition by partition: clamping is elementwise, nothing is gathered)."""
    if hasattr(param, "ds_id"):  # ZeRO-3
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        safe_set_local_fp32_param(param, safe_get_local_fp32_param(param).clamp(low, high))
        param.ds_tensor.clamp_(low, high)
    elif hasattr(param, "_hp_mapping"):  # ZeRO-1/2: whole working weights, partitioned fp32 copy
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        master = safe_get_full_fp32_param(param)  # collective: gathered from every rank's fragment
        safe_set_full_fp32_param(param, master.clamp(low, high))
    param.clamp_(low, high)


def apply_fsdp2(
    model: torch.nn.Module,
    blocks: tuple[type[torch.nn.Module], ...],
    mesh: Any,
    reshard_after_forward: bool,
) -> int:
    """``fully_shard`` each transformer block, then the root (which takes the remaining parameters);
    returns the number of blocks sharded. On a 2-D (replicate, shard) mesh this is hybrid sharding."""
    from torch.distributed.fsdp import fully_shard

    sharded = 0
    for module in list(model.modules()):
        if module is not model and isinstance(module, blocks):
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
            sharded += 1
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return sharded


def shard_fsdp2(
    model: torch.nn.Module, recipe: Any, blocks: tuple[type[torch.nn.Module], ...], device: torch.device
) -> None:
    """FSDP2 for the recipe's ``train.strategy`` (kind fsdp): full shards over every rank, hybrid shards
    inside a node and replicates across nodes, grad_op keeps whole weights between forward and backward."""
    from torch.distributed.device_mesh import init_device_mesh

    strategy, train = recipe.train.strategy, recipe.train
    hybrid = strategy.sharding == "hybrid"
    shape = (train.num_nodes, train.devices) if hybrid else (train.num_nodes * train.devices,)
    names = ("replicate", "shard") if hybrid else ("shard",)
    mesh = init_device_mesh(device.type, shape, mesh_dim_names=names)
    apply_fsdp2(model, blocks, mesh, reshard_after_forward=strategy.sharding != "grad_op")


def as_root_forward(root: torch.nn.Module, objective: Callable[..., Any]) -> Callable[..., Any]:
    """``objective`` run as a forward pass of the FSDP2 root ``root``. FSDP2 unshards the root's own
    parameters (embeddings, projections, scalars: everything outside the blocks) and reduces their
    gradients around the root's forward only; a family's objective may instead call other methods of the
    model (``encode_text``, a decoder) or read its parameters directly, so the whole objective becomes
    that forward pass."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    root.vlmforge_objective = objective  # an instance attribute: the model's state dict is unchanged
    register_fsdp_forward_method(root, "vlmforge_objective")
    return root.vlmforge_objective


def gather_full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full, unsharded state dict of an FSDP (1 or 2) module on CPU: on global rank 0 only (empty on the
    others). Collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options)


def zero_checkpoint_state(directory: Path, tag: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The fp32 weights of a DeepSpeed ZeRO checkpoint directory, gathered from every rank's partition
    (DeepSpeed's own zero_to_fp32 reader)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=tag))


def save_weights(state: dict[str, torch.Tensor], step: int, path: Path) -> Path:
    """Write gathered weights as a weights-only checkpoint (``{"state_dict", "global_step"}``) through a
    temporary file next to it, so a reader never sees a partial file (on a full disk: ``DiskFull``)."""
    with writing(path) as tmp, tmp.open("wb") as handle:
        torch.save({"state_dict": state, "global_step": step}, handle)
    return path
