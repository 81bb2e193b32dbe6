"""What ``vlmforge plan --calibrate`` runs: real optimizer steps under the training Trainer, timed per step
(``StepTimer``); without the recipe's data, a model trained on a loss over synthetic inputs of the
recipe's shapes (``SyntheticSteps``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch


class SyntheticSteps(pl.LightningModule):
    """A model (its frozen parts and adapters included) trained on ``loss(model, micro_batch)``, a loss
    over synthetic inputs of one micro-batch."""

    def __init__(
        self, model: torch.nn.Module, loss: Callable[[torch.nn.Module, int], torch.Tensor], micro_batch: int
    ) -> None:
        super().__init__()
        self.model, self.loss, self.micro_batch = model, loss, micro_batch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(self.model, self.micro_batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-6)


class StepTimer(pl.Callback):
    """Times optimizer steps after ``warmup`` from one step's end to the next, so that fetching the next
    batch (done by Lightning between the hooks) counts, as it does in training; stops training after at
    least ``steps`` steps and ``min_seconds`` of timed steps (millisecond steps need many samples)."""

    def __init__(self, steps: int, min_seconds: float, warmup: int) -> None:
        self.steps, self.min_seconds, self.warmup = steps, min_seconds, warmup
        self.times: list[float] = []
        self._last_end = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if trainer.global_step > self.warmup:
            self.times.append(now - self._last_end)
        self._last_end = now
        if trainer.global_step >= self.steps and sum(self.times) >= self.min_seconds:
            trainer.should_stop = True
