"""What ``vlmforge plan --calibrate`` runs: real optimizer steps of a recipe's model under the training
Trainer, on a planning phase's probe loss over synthetic inputs (no data needed), timed per step."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch

if TYPE_CHECKING:
    from vlmforge.planning.phases import Phase


class ProbeModule(pl.LightningModule):
    """The phase's model (its frozen parts and adapters included) trained on its probe loss."""

    def __init__(self, phase: Phase, micro_batch: int) -> None:
        super().__init__()
        self.phase, self.micro_batch = phase, micro_batch
        self.model = phase.build("cpu")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.phase.probe(self.model, self.micro_batch)

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
