"""What a recipe needs of this machine before training starts (packages, devices), checked without
importing Lightning, so that ``vlmforge validate`` runs the same checks as the training verbs cheaply."""

from __future__ import annotations

from vlmforge.config.schema import DeepSpeedStrategy, FSDPStrategy, LoggerConfig, TrainingRecipe
from vlmforge.errors import UserError, missing_extra
from vlmforge.models.attention import attention_problem

# logger kind -> the package it imports, installed by the extra of the same name
LOGGER_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow"}


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
    if train.accelerator == "gpu" and not _cuda_available():
        raise UserError(
            "train.accelerator gpu: this machine has no CUDA GPU",
            hint="run it on a GPU machine (`vlmforge plan` prices it from anywhere), or set "
            "train.accelerator=cpu to try it here",
        )
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
    attention = attention_problem(train.attention, cpu)
    if attention is not None:
        raise attention


def check_loggers_installed(loggers: list[LoggerConfig]) -> None:
    """Fail before anything is created when one of the recipe's loggers needs a package that is missing."""
    import importlib.util

    for logger in loggers:
        package = LOGGER_PACKAGES.get(logger.kind)
        if package is not None and importlib.util.find_spec(package) is None:
            raise missing_extra(package, logger.kind)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
