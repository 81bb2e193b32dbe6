"""The DeepSpeed JSON config of one fit (a pretrain run, a finetune stage, an alignment): one pure
function of the recipe's ``train`` section and the fit's batch plan, used by the Trainer and by
``vlmforge pretrain|finetune|align --emit deepspeed-config``.

Batch keys follow DeepSpeed's identity train_batch_size = micro-batch x accumulation x world size; ZeRO
stages and offload follow Rajbhandari et al. 2020 (ZeRO) and Ren et al. 2021 (ZeRO-Offload). The optimizer
is left to the training module (AdamW with vlmforge's weight-decay groups and schedule; DeepSpeed's
CPU Adam when optimizer states are offloaded), so the config carries no ``optimizer`` or ``scheduler``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.config.schema import BatchPlan, DeepSpeedStrategy, DeviceConfig, TrainingRecipe
from vlmforge.errors import UserError

if TYPE_CHECKING:
    import torch

# DeepSpeed's dynamic fp16 loss scaling (loss_scale 0 = dynamic), at DeepSpeed's documented defaults.
FP16_LOSS_SCALING = {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2}


def deepspeed_strategy(train: DeviceConfig) -> DeepSpeedStrategy:
    strategy = train.strategy
    if not isinstance(strategy, DeepSpeedStrategy):
        raise UserError(
            f"train.strategy.kind is {strategy.kind!r}: a DeepSpeed config needs the deepspeed strategy",
            hint="add train.strategy.kind=deepspeed (and e.g. train.strategy.stage=3)",
        )
    return strategy


def deepspeed_config(train: DeviceConfig, batch: BatchPlan) -> dict[str, Any]:
    """The DeepSpeed config of a fit whose ``train.strategy`` is deepspeed, overrides merged."""
    strategy = deepspeed_strategy(train)
    zero: dict[str, Any] = {
        "stage": strategy.stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
    if strategy.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if strategy.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_batch_size": batch.global_batch,
        "train_micro_batch_size_per_gpu": batch.micro_batch,
        "gradient_accumulation_steps": batch.accumulate,
        "gradient_clipping": train.grad_clip_norm or 0.0,
        "zero_optimization": zero,
        # the optimizer is torch's AdamW from the training module (ZeRO shards its states all the same)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": batch.max_steps + 1,  # vlmforge logs progress itself
        "wall_clock_breakdown": False,
    }
    if train.precision == "bf16-mixed":
        config["bf16"] = {"enabled": True}
    elif train.precision == "16-mixed":
        config["fp16"] = {"enabled": True, **FP16_LOSS_SCALING}
    return merge(config, strategy.overrides)


def adamw_class(recipe: TrainingRecipe) -> Callable[..., torch.optim.Optimizer]:
    """AdamW for the training module: DeepSpeed's CPU Adam (same update, vectorised on the CPU) when ZeRO
    offloads optimizer states, since DeepSpeed refuses a torch optimizer there; torch's AdamW otherwise."""
    strategy = recipe.train.strategy
    if isinstance(strategy, DeepSpeedStrategy) and strategy.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return functools.partial(DeepSpeedCPUAdam, adamw_mode=True)
    import torch

    return torch.optim.AdamW


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def for_lightning(config: dict[str, Any]) -> dict[str, Any]:
    """Lightning's DeepSpeedStrategy sets ``gradient_accumulation_steps`` from the Trainer and refuses the
    key in a config; the Trainer gets the same value from the recipe."""
    return {k: v for k, v in config.items() if k != "gradient_accumulation_steps"}


def emit_deepspeed_config(train: DeviceConfig, batch: BatchPlan, path: Path) -> Path:
    """Write a fit's DeepSpeed config as JSON to ``path``."""
    import json

    config = deepspeed_config(train, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path
