"""vlmforge's Lightning callbacks: atomic checkpoints with SIGTERM handling (and the checkpoint writer
they go through) and sample accounting. Metrics and progress: ``training.metrics_log``; evaluation
during training: ``training.periodic_eval``."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from vlmforge.data.accounting import (
    EXAMPLES_KEPT,
    REASONS,
    Drop,
    Tally,
    budget_error,
    count_reasons,
    over_budget,
)
from vlmforge.data.base import ImageTextSet
from vlmforge.storage import (
    GATHERED_WEIGHTS,
    DiskFull,
    append_line,
    checkpoint_name,
    disk_full,
    fsync_path,
    json_text,
    prune_checkpoints,
    remove_path,
    replace_path,
    temporary_path,
    writing,
)


class SameFolderCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint file next to its destination, then renames it into place.

    Lightning's own writer goes through fsspec's transaction, which writes a temporary file in $TMPDIR
    and moves it over (a copy across file systems): a small or full $TMPDIR fails the save although the
    run directory has room, and a full device gives an error without errno. Here ``torch.save`` writes
    through a Python file, so lack of space is an ``OSError`` (raised as ``DiskFull``, the partial file
    removed). Sharded strategies write their folders themselves (torch.distributed.checkpoint, DeepSpeed)
    into the destination and do not come here."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with writing(target) as tmp, tmp.open("wb") as handle:
            torch.save(checkpoint, handle)


def at_step_boundary(trainer: pl.Trainer, batch_idx: int) -> bool:
    """True after the micro-batch that completes an optimizer step (gradient accumulation)."""
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0


class Diverged(Exception):
    """The loss became non-finite (NaN or infinity). Raised on every rank before the optimizer step that
    would have spread it into the weights, once the weights of the last finite step are saved."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"loss became non-finite at step {step + 1}; step {step} saved to {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


STOP_SIGNALS = {signal.SIGTERM: "preempted", signal.SIGINT: "interrupted"}  # signal -> the run's status


class AtomicCheckpoint(pl.Callback):
    """Saves every ``every_steps`` optimizer steps and at the end of training.

    A checkpoint (a file; a folder of per-rank files under sharded FSDP state dicts and DeepSpeed) is
    written under a temporary name, flushed to disk, then renamed into place (``os.replace``), so a
    reader only ever sees complete checkpoints. Only the newest ``keep_last`` step checkpoints are kept,
    and an older one is removed only once the new one is in place. When the disk fills up while writing,
    the temporary file is removed and ``DiskFull`` is raised: the earlier checkpoints are untouched.
    A sharded run (FSDP, DeepSpeed) also gathers its final weights into one file for evaluation.

    On SIGTERM or SIGINT (Ctrl-C; a second one aborts at once) the current step finishes, a checkpoint is
    written and training stops: ``stopped`` is then the run's status ("preempted" or "interrupted"). A
    non-finite loss stops the run before its optimizer step: the last finite step is saved and
    ``Diverged`` raised. ``last_path`` is the newest checkpoint written.
    """

    def __init__(self, directory: Path, every_steps: int, keep_last: int) -> None:
        self.directory, self.every_steps, self.keep_last = directory, every_steps, keep_last
        self.last_saved_step = -1
        self.stopped: str | None = None
        self.final_path: Path | None = None
        self.last_path: Path | None = None
        self._signalled: str | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._nonfinite: torch.Tensor | None = None  # on the device: no sync per micro-batch

    @property
    def preempted(self) -> bool:
        """Stopped by a signal, with a checkpoint of the step it finished."""
        return self.stopped is not None

    # ------------------------------------------------------------------------------------- signals
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_saved_step = trainer.global_step  # a resumed run does not re-save its start
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signalled == STOP_SIGNALS[signal.SIGINT] and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the step to finish
        self._signalled = STOP_SIGNALS[signal.Signals(signum)]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.preempted:
            self.final_path = self.save(trainer)
            if _is_sharded(trainer.strategy):
                self.final_path = self.save_full_weights(trainer, self.final_path)
        self._restore_handlers()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # ---------------------------------------------------------------------------------- divergence
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        bad = bool(self._nonfinite) if self._nonfinite is not None else False
        self._nonfinite = None
        if trainer.world_size > 1:  # every rank must stop at the same step
            bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            return
        step_back = getattr(pl_module, "step_back", None)
        if step_back is not None:  # the saved data position is the last finite step's, as its weights
            step_back()
        path = self.save(trainer)
        self._restore_handlers()
        raise Diverged(trainer.global_step, path)

    # ------------------------------------------------------------------------------------ saving
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not at_step_boundary(trainer, batch_idx):  # a checkpoint mid-accumulation would lose gradients
            return
        stop = self._signalled is not None
        if trainer.world_size > 1:  # every rank must take the same decision at the same step
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            self.save(trainer)
            self.stopped = self._signalled or STOP_SIGNALS[signal.SIGTERM]  # another rank was signalled
            trainer.should_stop = True
            return
        step = trainer.global_step
        if step % self.every_steps == 0 and step != self.last_saved_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> Path:
        """Write the step checkpoint: a file, or under sharded strategies a folder of per-rank files."""
        path = self.directory / checkpoint_name(trainer.global_step)
        if trainer.global_step == self.last_saved_step and path.exists():
            self.last_path = path
            return path
        tmp = temporary_path(path)
        if trainer.is_global_zero:
            remove_path(tmp)  # left behind by a process killed while writing
        trainer.strategy.barrier("vlmforge-checkpoint-start")
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # returns once every rank has written its part
            if trainer.is_global_zero:
                fsync_path(tmp)
                replace_path(tmp, path)
        except BaseException as error:
            if trainer.is_global_zero:
                remove_path(tmp)
            full = disk_full(error)
            if full is None:
                raise
            raise DiskFull(path, full.detail) from error
        if trainer.is_global_zero:
            prune_checkpoints(self.directory, self.keep_last)
        trainer.strategy.barrier("vlmforge-checkpoint")
        self.last_saved_step = trainer.global_step
        self.last_path = path
        return path

    def save_full_weights(self, trainer: pl.Trainer, final: Path) -> Path:
        """Gather a sharded run's weights into one file that ``vlmforge eval`` and ``model.pretrained`` read:
        FSDP's full state dict (collective), or DeepSpeed's fp32 weights read from the final ZeRO folder."""
        from lightning.pytorch.strategies import DeepSpeedStrategy

        from vlmforge.training.sharding import gather_full_state, save_weights, zero_checkpoint_state

        target = self.directory / GATHERED_WEIGHTS
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            state = zero_checkpoint_state(final) if trainer.is_global_zero else {}
        else:
            state = gather_full_state(trainer.strategy.model)
        if trainer.is_global_zero:
            save_weights(state, trainer.global_step, target)
        trainer.strategy.barrier("vlmforge-weights")
        return target


def _is_sharded(strategy: Any) -> bool:
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, DeepSpeedStrategy | FSDPStrategy | ModelParallelStrategy)


class DataAccounting(pl.Callback):
    """Counts the samples read and dropped (each batch's ``dropped`` list), summed over ranks at every
    optimizer step, and stops the run once the drops exceed ``data.max_bad_fraction`` of the source:
    its entries rejected when opened plus this epoch's read-time drops (see ``vlmforge.data.accounting``).
    The counts are saved in checkpoints, so a resumed run continues them."""

    def __init__(self, data: ImageTextSet, max_bad_fraction: float, metrics_path: Path) -> None:
        self.source, self.total, self.rejected = data.name, data.source_size, list(data.rejected)
        self.max_bad_fraction, self.metrics_path = max_bad_fraction, metrics_path
        self.tally = Tally()  # all ranks, whole run
        self.epoch, self.epoch_bad = 0, 0  # all ranks, current epoch
        self._read, self._drops = 0, []  # this rank, since the last optimizer step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._read += len(batch["index"])
        self._drops += [Drop(**d) for d in batch["dropped"]]
        if not at_step_boundary(trainer, batch_idx):
            return
        counts = torch.tensor([self._read, *(sum(d.reason == r for d in self._drops) for r in REASONS)])
        if trainer.world_size > 1:  # every rank sees the same sums and so stops at the same step
            counts = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").cpu()
        epoch = int(batch["epoch"])
        if epoch != self.epoch:
            self.epoch, self.epoch_bad = epoch, 0
        self.tally.read += int(counts[0])
        for reason, n in zip(REASONS, counts[1:].tolist(), strict=True):
            self.tally.dropped[reason] += int(n)
        named = {(d.shard, d.key) for d in self.tally.examples}  # a bad sample comes back every epoch
        fresh = [d for d in self._drops if (d.shard, d.key) not in named]
        self.tally.examples += fresh[: max(0, EXAMPLES_KEPT - len(self.tally.examples))]
        self.epoch_bad += int(counts[1:].sum())
        self._read, self._drops = 0, []
        bad = len(self.rejected) + self.epoch_bad
        if over_budget(bad, self.total, self.max_bad_fraction):
            if trainer.is_global_zero:
                record = {"step": trainer.global_step, "epoch": epoch, "event": "stopped: data"}
                append_line(self.metrics_path, json_text(record | self.metrics()))
            examples = [*self.tally.examples, *self.rejected]
            raise budget_error(self.source, bad, self.total, self.max_bad_fraction, examples)

    def metrics(self) -> dict[str, int]:
        """Counts for metrics.jsonl: samples read, kept, dropped (in all and per reason)."""
        counts = {"data_read": self.tally.read, "data_kept": self.tally.kept, "data_dropped": self.tally.bad}
        return counts | {f"data_dropped_{r}": n for r, n in self.tally.dropped.items() if n}

    def summary(self) -> dict[str, Any]:
        """The run summary's ``data`` entry: the source, what it rejected when opened, what was read."""
        return {
            "source": self.source,
            "source_samples": self.total,
            "max_bad_fraction": self.max_bad_fraction,
            "rejected_at_open": count_reasons(d.reason for d in self.rejected),
            **self.tally.to_json(),
            "examples": [d.to_json() for d in [*self.tally.examples, *self.rejected][:EXAMPLES_KEPT]],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "read": self.tally.read,
            "dropped": dict(self.tally.dropped),
            "examples": [d.to_json() for d in self.tally.examples],
            "epoch": self.epoch,
            "epoch_bad": self.epoch_bad,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tally = Tally(state_dict["read"], Counter(state_dict["dropped"]))
        self.tally.examples = [Drop(**d) for d in state_dict["examples"]]
        self.epoch, self.epoch_bad = state_dict["epoch"], state_dict["epoch_bad"]
