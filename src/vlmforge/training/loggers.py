"""The recipe's loggers as Lightning loggers, and what is sent to them.

metrics.jsonl is vlmforge's own record and always written (``MetricsLog``); the loggers receive the same
numbers at the same steps. The Trainer itself runs with ``logger=False``: vlmforge's callbacks call
``log_metrics`` and ``finalize`` directly, so Lightning logs nothing of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vlmforge.config.schema import CsvLogger, LoggerConfig, MlflowLogger, TensorBoardLogger, WandbLogger
from vlmforge.training.requirements import check_loggers_installed

LOGS = "logs"  # <fit directory>/logs/<kind>/...


def build_loggers(configs: list[LoggerConfig], directory: Path, name: str) -> list[Any]:
    """One Lightning logger per logger section (``none`` adds none), writing under ``directory/logs``;
    ``name`` is the run's (a finetune stage's: run-stage). The CSV logger is always there: a file any
    spreadsheet opens, next to metrics.jsonl, costs nothing."""
    check_loggers_installed(configs)
    if not any(isinstance(config, CsvLogger) for config in configs):
        configs = [CsvLogger(), *configs]
    logs = directory / LOGS
    return [logger for config in configs if (logger := _lightning_logger(config, logs, name)) is not None]


def _lightning_logger(config: LoggerConfig, logs: Path, name: str) -> Any:
    if isinstance(config, CsvLogger):
        from lightning.pytorch.loggers import CSVLogger

        # a version folder per start: Lightning's CSV writer empties an existing version's file
        return CSVLogger(save_dir=str(logs), name="csv")
    if isinstance(config, TensorBoardLogger):
        from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoard

        return LightningTensorBoard(save_dir=str(logs), name="tensorboard", default_hp_metric=False)
    if isinstance(config, MlflowLogger):
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(
            experiment_name=config.experiment,
            run_name=name,
            tracking_uri=config.tracking_uri or mlflow_file_store(logs),
        )
    if isinstance(config, WandbLogger):
        from lightning.pytorch.loggers import WandbLogger as LightningWandb

        return LightningWandb(
            project=config.project,
            entity=config.entity,
            mode=config.mode,
            save_dir=str(logs.parent),
            name=name,
        )
    return None


def mlflow_file_store(logs: Path) -> str:
    """MLflow's local file store under the run's logs folder: an offline tracking URI."""
    return (logs / "mlflow").resolve().as_uri()


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record, as loggers take them (strings and missing values left out)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def send(loggers: list[Any], metrics: dict[str, Any], step: int) -> None:
    """Log a record's numbers at an optimizer step to every logger."""
    values = numeric(metrics)
    for logger in loggers:
        logger.log_metrics(values, step=step)


def finalize(loggers: list[Any], status: str) -> None:
    """Flush and close every logger (``status``: success, failed)."""
    for logger in loggers:
        logger.finalize(status)
