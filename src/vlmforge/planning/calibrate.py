"""Calibration on the hardware at hand: time real training steps of a recipe's model.

Inputs are random tensors of the recipe's shapes, so no data is needed. The measured utilisation
(model FLOPs per second / device peak) replaces the published-runs prior for this device in later plans.
On a GPU the peak comes from the catalog; on a CPU (no catalog entry) it is measured with a large matmul.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vlmforge.config.schema import TrainingRecipe
    from vlmforge.planning.phases import Phase


@dataclass
class Calibration:
    device: str
    precision: str
    family: str
    micro_batch: int
    median_step_seconds: float
    flops_per_step: float
    peak_flops: float
    measured_mfu: float
    peak_memory_gb: float | None
    overhead_seconds: float = 0.0  # per-step time that does not grow with the batch (optimizer, launches)
    seconds_per_sample: float = 0.0
    # what the timed steps were: "recipe data" (`vlmforge pretrain`'s module, loader and callbacks on the
    # recipe's data) or "synthetic" (the probe loss on random inputs: the data is not on this machine)
    loop: str = "synthetic"

    def predict_step_seconds(self, micro_batch: int) -> float:
        """Step time at another micro-batch from the two-point fit: overhead + per-sample x batch."""
        return self.overhead_seconds + self.seconds_per_sample * micro_batch


def cache_file() -> Path:
    root = Path(os.environ.get("VLMFORGE_CACHE", Path.home() / ".cache" / "vlmforge"))
    return root / "calibration.json"


def load_calibrations() -> dict[str, dict[str, object]]:
    path = cache_file()
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def calibration_key(device: str, precision: str, family: str) -> str:
    return f"{device}|{precision}|{family}"


def save_calibration(calibration: Calibration) -> Path:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = load_calibrations()
    entries[calibration_key(calibration.device, calibration.precision, calibration.family)] = asdict(
        calibration
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


MIN_TIMED_SECONDS = 2.0


def cpu_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """Achievable fp32 matmul FLOP/s of this CPU with the current thread count (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def real_training(recipe: TrainingRecipe, scratch: Path) -> tuple[Any, list[Any]] | None:
    """What `vlmforge pretrain` would fit for this (one-device) recipe: the family's module on the
    recipe's own data and vlmforge's callbacks (``build_training``); None when the data cannot be read
    here or the recipe is not a pretrain one."""
    import io

    from vlmforge.config.schema import PretrainRecipe
    from vlmforge.data.sources import train_val_split
    from vlmforge.errors import UserError
    from vlmforge.pretrain import build_training

    if not isinstance(recipe, PretrainRecipe):
        return None
    try:
        train, _ = train_val_split(recipe.data)
    except (UserError, OSError):
        return None
    if len(train) < recipe.data.batch_size:
        return None
    training = build_training(recipe, train, scratch, [])
    training.metrics_log.stream = io.StringIO()  # progress lines stay out of the plan's output
    return training.module, training.callbacks


def time_training_steps(
    recipe: TrainingRecipe,
    phase: Phase,
    micro_batch: int,
    steps: int = 6,
    warmup: int = 2,
    device: str = "cpu",
) -> tuple[float, float | None, str]:
    """(median seconds per optimizer step, peak memory GB or None, what fed the steps) of real training
    steps.

    The steps run through the same lean Lightning Trainer as training (precision, gradient clipping,
    optimizer, per-step hooks). When the recipe's data is on this machine they are `vlmforge pretrain`'s
    own steps (the family's module on that data, with vlmforge's callbacks), so that reading and framework
    overhead, which dominate millisecond steps, are measured; otherwise the phase's probe loss runs on
    synthetic inputs of the recipe's shapes."""
    import tempfile

    from vlmforge.config.schema import PretrainRecipe
    from vlmforge.training.probe import ProbeModule, StepTimer
    from vlmforge.training.trainer import build_trainer

    one_device = recipe.model_copy(
        update={
            "train": recipe.train.model_copy(
                update={
                    "devices": 1,
                    "num_nodes": 1,
                    "micro_batch_size": micro_batch,
                    "accelerator": "gpu" if device == "cuda" else "cpu",
                    "strategy": {"kind": "auto"},
                }
            ),
        }
    )
    if isinstance(one_device, PretrainRecipe):  # one micro-batch per step, random init
        model = one_device.model.model_copy(update={"pretrained": None})
        data = one_device.data.model_copy(update={"batch_size": micro_batch})
        # no checkpoint is written: its cost depends on the interval, not on the step
        never = one_device.train.checkpoint.model_copy(update={"every_steps": 10**9})
        train = one_device.train.model_copy(update={"checkpoint": never})
        one_device = one_device.model_copy(update={"model": model, "data": data, "train": train})
    timer = StepTimer(warmup + steps, MIN_TIMED_SECONDS, warmup)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="vlmforge-calibrate-") as scratch:
        real = real_training(one_device, Path(scratch))
        callbacks = [*(real[1] if real else []), timer]
        trainer = build_trainer(one_device, callbacks, scratch, max_steps=1_000_000, accumulate=1)
        if real:
            trainer.fit(real[0])
        else:
            synthetic = torch.utils.data.DataLoader(range(1_000_000), batch_size=1)
            trainer.fit(ProbeModule(phase, micro_batch), train_dataloaders=synthetic)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    return statistics.median(timer.times), peak, "recipe data" if real else "synthetic"
