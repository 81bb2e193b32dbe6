"""The Trainer factory: a lean Lightning Trainer configured from the recipe.

Lightning's own checkpointing, progress bar, model summary and loggers are off: vlmforge's callbacks
write atomic checkpoints and metrics.jsonl and feed the recipe's loggers (``training.loggers``), which
keeps the per-step overhead near a plain loop.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from vlmforge.config.schema import (
    BatchPlan,
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    TrainingRecipe,
)
from vlmforge.training.requirements import on_cpu

FSDP_SHARDING = {"full": "FULL_SHARD", "hybrid": "HYBRID_SHARD", "grad_op": "SHARD_GRAD_OP"}


def build_strategy(recipe: TrainingRecipe, batch: BatchPlan, blocks: tuple[type, ...] = ()) -> Any:
    """Lightning strategy for the recipe; ``blocks`` are the model's transformer block classes (FSDP
    wraps each one separately); ``batch`` sizes DeepSpeed's batches."""
    strategy = recipe.train.strategy
    cpu = on_cpu(recipe)
    if isinstance(strategy, DDPStrategy):
        from lightning.pytorch.strategies import DDPStrategy as LightningDDP

        return LightningDDP(
            find_unused_parameters=strategy.find_unused_parameters,
            process_group_backend="gloo" if cpu else None,
        )
    if isinstance(strategy, FSDPStrategy) and cpu:
        # FSDP2: the training module's configure_model shards each block over its own device mesh
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            data_parallel_size=recipe.world_size,
            tensor_parallel_size=1,
            save_distributed_checkpoint=strategy.state_dict == "sharded",
            process_group_backend="gloo",
        )
    if isinstance(strategy, FSDPStrategy):
        from lightning.pytorch.strategies import FSDPStrategy as LightningFSDP

        hybrid = strategy.sharding == "hybrid"
        return LightningFSDP(
            sharding_strategy=FSDP_SHARDING[strategy.sharding],  # type: ignore[arg-type]
            auto_wrap_policy=set(blocks),
            cpu_offload=strategy.cpu_offload,
            state_dict_type=strategy.state_dict,
            device_mesh=(recipe.train.num_nodes, recipe.train.devices) if hybrid else None,
        )
    if isinstance(strategy, DeepSpeedStrategy):
        from lightning.pytorch.strategies import DeepSpeedStrategy as LightningDeepSpeed

        from vlmforge.training.deepspeed_config import deepspeed_config, for_lightning

        return LightningDeepSpeed(config=for_lightning(deepspeed_config(recipe.train, batch)))
    return "auto"


def quiet_lightning() -> None:
    """Lightning's banner lines (GPU available, tips) and two warnings that do not apply are noise here."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # vlmforge restores the data position itself (GlobalBatchSampler + the checkpoint's "vlmforge" entry)
    warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")


def build_trainer(
    recipe: TrainingRecipe,
    callbacks: list[pl.Callback],
    run_dir: str,
    batch: BatchPlan,
    blocks: tuple[type, ...] = (),
) -> pl.Trainer:
    """A Trainer for the recipe's devices stepping as ``batch`` says (length, accumulation); ``blocks``
    are the model's transformer block classes (FSDP wraps each). Checkpoint files are written next to
    their destination, never through $TMPDIR (``SameFolderCheckpointIO``)."""
    from vlmforge.training.callbacks import SameFolderCheckpointIO

    quiet_lightning()
    train = recipe.train
    return pl.Trainer(
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=build_strategy(recipe, batch, blocks),
        precision=train.precision,  # type: ignore[arg-type]
        max_steps=batch.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=batch.accumulate,
        gradient_clip_val=train.grad_clip_norm,
        callbacks=callbacks,
        plugins=[SameFolderCheckpointIO()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,  # GlobalBatchSampler already splits data across ranks
        default_root_dir=run_dir,
    )
