"""The Trainer factory: a lean Lightning Trainer configured from the recipe.

Lightning's own checkpointing, progress bar, model summary and loggers are off: vlmforge's callbacks
write atomic checkpoints and metrics.jsonl, which keeps the per-step overhead near a plain loop.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from vlmforge.config.schema import (
    BatchPlan,
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    LoggerConfig,
    TrainingRecipe,
    WandbLogger,
)
from vlmforge.errors import UserError, missing_extra

FSDP_SHARDING = {"full": "FULL_SHARD", "hybrid": "HYBRID_SHARD", "grad_op": "SHARD_GRAD_OP"}


def on_cpu(recipe: TrainingRecipe) -> bool:
    """Whether the run trains on CPU: asked for, or ``auto`` on a machine without a CUDA GPU."""
    return recipe.train.accelerator == "cpu" or (recipe.train.accelerator == "auto" and not _cuda_available())


def is_sharded(recipe: TrainingRecipe) -> bool:
    """Strategies whose model states are split across ranks (their checkpoints may be folders)."""
    return isinstance(recipe.train.strategy, FSDPStrategy | DeepSpeedStrategy)


def check_runnable(recipe: TrainingRecipe) -> None:
    """Fail before anything is created when the recipe's strategy or precision cannot run here."""
    import importlib.util

    strategy, train = recipe.train.strategy, recipe.train
    cpu = on_cpu(recipe)
    if cpu and train.precision == "16-mixed":
        raise UserError(
            "train.precision 16-mixed (float16 autocast + loss scaler) needs a CUDA GPU; this run is on CPU",
            hint="use train.precision=bf16-mixed or 32 on CPU",
        )
    if isinstance(strategy, DeepSpeedStrategy):
        if cpu:
            raise UserError(
                "train.strategy.kind deepspeed: Lightning's DeepSpeedStrategy runs on CUDA GPUs only",
                hint="on CPU use train.strategy.kind=fsdp (or ddp); `vlmforge pretrain -c RECIPE --emit "
                "deepspeed-config` still writes the DeepSpeed config for a GPU machine",
            )
        if importlib.util.find_spec("deepspeed") is None:
            raise missing_extra("deepspeed", "deepspeed")
    if isinstance(strategy, FSDPStrategy) and cpu and strategy.cpu_offload:
        raise UserError(
            "train.strategy.cpu_offload moves shards from GPU to CPU memory: a CPU run has none to move",
            hint="set train.strategy.cpu_offload=false",
        )


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


def check_logger_installed(config: LoggerConfig) -> None:
    """Fail before anything is created when the recipe's logger needs a package that is missing."""
    import importlib.util

    if isinstance(config, WandbLogger) and importlib.util.find_spec("wandb") is None:
        raise missing_extra("wandb", "wandb")


def build_loggers(config: LoggerConfig, run_dir: str, name: str) -> list[Any]:
    if isinstance(config, WandbLogger):
        check_logger_installed(config)
        from lightning.pytorch.loggers import WandbLogger as LightningWandb

        return [
            LightningWandb(
                project=config.project, entity=config.entity, mode=config.mode, save_dir=run_dir, name=name
            )
        ]
    return []


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


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
