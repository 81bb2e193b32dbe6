"""The Trainer factory: a lean Lightning Trainer configured from the recipe.

Lightning's own checkpointing, progress bar, model summary and loggers are off: vlmforge's callbacks
write atomic checkpoints and metrics.jsonl, which keeps the per-step overhead near a plain loop.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from vlmforge.config.schema import DDPStrategy, LoggerConfig, PretrainRecipe, TrainingRecipe, WandbLogger
from vlmforge.errors import missing_extra


def build_strategy(recipe: TrainingRecipe) -> Any:
    strategy = recipe.train.strategy
    if isinstance(strategy, DDPStrategy):
        from lightning.pytorch.strategies import DDPStrategy as LightningDDP

        cpu = recipe.train.accelerator == "cpu" or not _cuda_available()
        return LightningDDP(
            find_unused_parameters=strategy.find_unused_parameters,
            process_group_backend="gloo" if cpu else None,
        )
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
    max_steps: int | None = None,
    accumulate: int | None = None,
) -> pl.Trainer:
    """A Trainer for the recipe's devices; ``max_steps``/``accumulate`` default to a pretrain recipe's."""
    quiet_lightning()
    train = recipe.train
    if isinstance(recipe, PretrainRecipe):
        max_steps = max_steps or recipe.train.max_steps
        accumulate = accumulate or recipe.accumulate_grad_batches
    return pl.Trainer(
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=build_strategy(recipe),
        precision=train.precision,  # type: ignore[arg-type]
        max_steps=max_steps,  # type: ignore[arg-type]
        max_epochs=-1,
        accumulate_grad_batches=accumulate,  # type: ignore[arg-type]
        gradient_clip_val=train.grad_clip_norm,
        callbacks=callbacks,
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
