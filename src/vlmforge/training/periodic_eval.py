"""Evaluation during training (``train.eval_every_steps``): the recipe's eval tasks on the held-out split
every N optimizer steps, on rank 0, appended to metrics.jsonl as ``{"step": N, "eval": {task: metrics}}``
and sent to the loggers as ``eval/<task>/<metric>``.

The model is evaluated without gradients in eval mode and put back in the mode it trained in; the random
number generators are restored afterwards, so a run trains the same steps with or without it.
"""

from __future__ import annotations

import copy
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from vlmforge.storage import append_line, json_text
from vlmforge.training.callbacks import at_step_boundary
from vlmforge.training.loggers import send

Evaluate = Callable[[torch.nn.Module], dict[str, dict[str, Any]]]  # model -> {task kind: metrics}


def scalar_metrics(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task's single values (numbers, strings); lists such as per-sample predictions left out."""
    return {
        task: {
            key: value
            for key, value in metrics.items()
            if isinstance(value, int | float | str) and not isinstance(value, bool)
        }
        for task, metrics in results.items()
    }


def logged_names(evaluation: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``eval/<task>/<metric>``: how the loggers name the evaluation's values."""
    return {
        f"eval/{task}/{key}": value for task, metrics in evaluation.items() for key, value in metrics.items()
    }


@contextmanager
def preserved_randomness(device: torch.device) -> Iterator[None]:
    """Restore torch's (CPU and the model's CUDA device), numpy's and Python's generators on exit."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def evaluate_in_eval_mode(model: torch.nn.Module, evaluate: Evaluate) -> dict[str, dict[str, Any]]:
    """``evaluate(model)`` in eval mode without gradients; the model goes back to its mode, the random
    generators to their state."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with preserved_randomness(device), torch.no_grad():
            return evaluate(model)
    finally:
        model.train(was_training)


def cpu_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model, or a CPU copy of it when it trains on an accelerator: the pretrain tasks encode batches
    that are on the CPU (as the end-of-run evaluation does)."""
    if next(model.parameters()).device.type == "cpu":
        return model
    return copy.deepcopy(model).to("cpu")


class PeriodicEval(pl.Callback):
    """Every ``every_steps`` optimizer steps, rank 0 runs ``evaluate`` on the module's model while the
    other ranks wait; the result is one metrics.jsonl line and one ``log_metrics`` per logger."""

    def __init__(self, every_steps: int, evaluate: Evaluate, metrics_path: Path, loggers: list[Any]) -> None:
        self.every_steps, self.evaluate = every_steps, evaluate
        self.metrics_path, self.loggers = metrics_path, loggers
        self.stream = sys.stderr

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not at_step_boundary(trainer, batch_idx) or trainer.global_step % self.every_steps:
            return
        step = trainer.global_step
        if trainer.is_global_zero:
            evaluation = scalar_metrics(evaluate_in_eval_mode(pl_module.model, self.evaluate))
            append_line(self.metrics_path, json_text({"step": step, "eval": evaluation}))
            send(self.loggers, logged_names(evaluation), step)
            print(f"eval at step {step}: {_summary(evaluation)}", file=self.stream, flush=True)
        if trainer.world_size > 1:  # the other ranks wait for rank 0's evaluation
            trainer.strategy.barrier("vlmforge-periodic-eval")


def _summary(evaluation: dict[str, dict[str, Any]]) -> str:
    """A few words per task for the progress output: its first numeric metric."""
    parts = []
    for task, metrics in evaluation.items():
        first = next(((k, v) for k, v in metrics.items() if isinstance(v, int | float)), None)
        parts.append(f"{task} {first[0]} {first[1]:.4g}" if first else task)
    return ", ".join(parts)
