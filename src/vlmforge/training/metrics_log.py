"""Metrics and progress of a fit: one JSON line per logged optimizer step in ``metrics.jsonl`` (always
written), the same numbers sent to the recipe's loggers, a progress line on stderr, and the peak memory
a finished fit reports."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as pl
import torch

from vlmforge.storage import append_line, json_text
from vlmforge.training.callbacks import at_step_boundary
from vlmforge.training.loggers import finalize, send


class MetricsLog(pl.Callback):
    """Every ``every_steps`` optimizer steps: one JSON line in ``metrics.jsonl`` (rank 0) and a progress
    line on stderr (a rich bar on a terminal, plain lines otherwise). Loss terms are averaged over ranks."""

    def __init__(
        self,
        path: Path,
        every_steps: int,
        samples_per_step: int,
        loggers: list[Any],
        extras: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.path, self.every_steps, self.samples_per_step = path, every_steps, samples_per_step
        self.loggers, self.extras = loggers, extras
        self.stream: TextIO = sys.stderr
        self.history: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._step0 = 0
        self._train_start = 0.0
        self._progress: Any = None
        self._task: Any = None
        self.step_times: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._train_start = time.perf_counter()
        self._step0 = trainer.global_step
        if trainer.is_global_zero and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._progress.add_task(
                "train", total=trainer.max_steps, completed=trainer.global_step, status=""
            )
            self._progress.start()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not at_step_boundary(trainer, batch_idx):
            return
        step = trainer.global_step
        if step % self.every_steps and step != trainer.max_steps:
            return
        terms = dict(getattr(pl_module, "last_terms", {}))
        if trainer.world_size > 1:
            terms = {k: trainer.strategy.reduce(v.float(), reduce_op="mean") for k, v in terms.items()}
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        elapsed, steps = now - self._t0, step - self._step0
        self._t0, self._step0 = now, step
        record: dict[str, Any] = {"step": step, "epoch": trainer.current_epoch}
        record |= {k: round(float(v), 6) for k, v in terms.items()}
        record["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        if steps > 0:
            self.step_times.append(elapsed / steps)
            record["samples_per_s"] = round(self.samples_per_step * steps / elapsed, 2)
        record["time_s"] = round(now - self._train_start, 3)
        if self.extras is not None:
            record |= self.extras()
        self.history.append(record)
        self.write(record)
        send(self.loggers, {k: v for k, v in record.items() if k != "step"}, step)
        self._show(record, trainer.max_steps)

    def write(self, record: dict[str, Any]) -> None:
        """Append one strict-JSON line to metrics.jsonl (a NaN loss is written as null); on a full disk:
        ``DiskFull``, the file left whole."""
        append_line(self.path, json_text(record))

    def _show(self, record: dict[str, Any], total: int) -> None:
        status = f"loss {record.get('loss', float('nan')):.4f}"
        if "samples_per_s" in record:
            status += f"  {record['samples_per_s']:.0f} samples/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=record["step"], status=status)
        else:
            print(
                f"step {record['step']}/{total}  {status}  lr {record['lr']:.2e}",
                file=self.stream,
                flush=True,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._progress is not None:
            self._progress.stop()
        finalize(self.loggers, "success")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """What the loggers hold is flushed when a fit stops early (a non-finite loss, a data budget)."""
        if self._progress is not None:
            self._progress.stop()
        finalize(self.loggers, "failed")


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory of this process: CUDA allocator peak on GPU, max resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except ImportError:  # not on POSIX
        return None
