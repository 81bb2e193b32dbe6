"""What ``vlmforge plan --calibrate`` runs: real optimizer steps of a recipe's model under the training
Trainer, on the family's ``probe_loss`` over synthetic inputs (no data needed), timed per step."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from vlmforge.config.models import ModelConfig
from vlmforge.families import family_for


class ProbeModule(pl.LightningModule):
    def __init__(self, cfg: ModelConfig, vocab_size: int, micro_batch: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size, self.micro_batch = cfg, vocab_size, micro_batch
        self.models = family_for(cfg).models
        self.model = self.models.build_model(cfg, vocab_size)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.models.probe_loss(
            self.cfg, self.model, self.micro_batch, self.device.type, self.vocab_size
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=1e-6)


class StepTimer(pl.Callback):
    """Times optimizer steps after ``warmup``; stops training after at least ``steps`` steps and
    ``min_seconds`` of timed steps (millisecond steps need many samples)."""

    def __init__(self, steps: int, min_seconds: float, warmup: int) -> None:
        self.steps, self.min_seconds, self.warmup = steps, min_seconds, warmup
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._start)
        if trainer.global_step >= self.steps and sum(self.times) >= self.min_seconds:
            trainer.should_stop = True
