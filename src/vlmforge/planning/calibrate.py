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
from typing import Any

import torch

from vlmforge.config.load import load_recipe, read_yaml
from vlmforge.config.schema import PretrainRecipe, TrainingRecipe, recipe_verb
from vlmforge.errors import UserError
from vlmforge.planning.accelerators import load_catalog, lookup, present_accelerator
from vlmforge.planning.phases import Phase, family_of, phase_cost, phases
from vlmforge.storage import read_json


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
    # recipe's data) or "synthetic" (the phase's loss on random inputs: the data is not on this machine)
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

    from vlmforge.data.sources import train_val_split
    from vlmforge.training.fit import build_training

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
    overhead, which dominate millisecond steps, are measured; otherwise the phase's synthetic loss runs on
    synthetic inputs of the recipe's shapes."""
    import tempfile

    from vlmforge.config.schema import BatchPlan
    from vlmforge.training.timing import StepTimer, SyntheticSteps
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
        steps_until_stopped = BatchPlan(micro_batch, micro_batch, 1, 1_000_000)  # StepTimer stops the fit
        trainer = build_trainer(one_device, callbacks, scratch, steps_until_stopped)
        if real:
            trainer.fit(real[0])
        else:
            synthetic = torch.utils.data.DataLoader(range(1_000_000), batch_size=1)
            trainer.fit(
                SyntheticSteps(phase.build("cpu"), phase.loss, micro_batch), train_dataloaders=synthetic
            )
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    return statistics.median(timer.times), peak, "recipe data" if real else "synthetic"


def calibrate(recipe: TrainingRecipe, micro_batch: int | None = None, steps: int = 6) -> Calibration:
    """Time real steps of the recipe's model here (its costliest phase: the stage that dominates a
    finetune); save the measured MFU as this device's prior."""
    import torch

    _, catalog_name = present_accelerator(recipe)
    family = family_of(recipe)
    candidates = phases(recipe)
    costs = [phase_cost(phase) for phase in candidates]
    costliest = max(range(len(costs)), key=lambda i: costs[i].total_flops)
    phase, flops = candidates[costliest], costs[costliest].flops_per_sample
    micro = micro_batch or phase.batch.micro_batch
    if catalog_name is None:
        device, name, peak = "cpu", f"cpu-{torch.get_num_threads()}t", cpu_peak_flops()
    else:
        device, name = "cuda", catalog_name
        peak = lookup(load_catalog(), catalog_name).peak_flops(recipe.train.precision)
    seconds, peak_gb, loop = time_training_steps(recipe, phase, micro, steps=steps, device=device)
    # A second, half-size point separates fixed per-step overhead from per-sample time.
    half_seconds = time_training_steps(recipe, phase, max(1, micro // 2), steps=steps, device=device)[0]
    per_sample = max(0.0, (seconds - half_seconds) / (micro - max(1, micro // 2))) if micro > 1 else seconds
    # noisy timings can make the fitted line pass below the origin: then all of the time is per sample, so
    # the fit still reproduces the measured step at the calibrated micro-batch
    per_sample = min(per_sample, seconds / micro)
    calibration = Calibration(
        device=name,
        precision=recipe.train.precision,
        family=family,
        micro_batch=micro,
        median_step_seconds=seconds,
        flops_per_step=flops * micro,
        peak_flops=peak,
        measured_mfu=flops * micro / (seconds * peak),
        peak_memory_gb=peak_gb,
        overhead_seconds=seconds - per_sample * micro,
        seconds_per_sample=per_sample,
        loop=loop,
    )
    save_calibration(calibration)
    return calibration


def refit(runs_dir: Path) -> list[Calibration]:
    """Measured utilisation of finished runs (``plan.json`` next to ``actual.json``), saved per device,
    precision and family as the median over runs. CPU runs are scored against this CPU's matmul peak."""
    if not runs_dir.is_dir():
        raise UserError(f"--refit: {runs_dir} is not a directory", hint="point it at a runs/ folder")
    samples: dict[tuple[str, str, str], list[tuple[float, Calibration]]] = {}
    cpu_peak: float | None = None
    for plan_file in sorted(runs_dir.rglob("plan.json")):
        run_dir = plan_file.parent
        actual = read_json(run_dir / "actual.json") if (run_dir / "actual.json").is_file() else {}
        step_seconds = actual.get("median_step_seconds")
        if not step_seconds or not (run_dir / "recipe.yaml").is_file():
            continue
        if recipe_verb(read_yaml(run_dir / "recipe.yaml")) != "pretrain":  # one phase per run only
            continue
        estimate = read_json(plan_file)
        recipe = load_recipe("pretrain", run_dir / "recipe.yaml")
        assert isinstance(recipe, PretrainRecipe)
        if estimate.get("accelerator"):
            device = estimate["accelerator"]
            peak = lookup(load_catalog(), device).peak_flops(recipe.train.precision) * recipe.world_size
        else:
            import torch

            cpu_peak = cpu_peak or cpu_peak_flops()
            device, peak = f"cpu-{torch.get_num_threads()}t", cpu_peak
        batch = recipe.batch_plan()
        per_step = estimate["flops_per_sample"] * batch.global_batch
        mfu = per_step / (step_seconds * peak)
        key = (device, recipe.train.precision, family_of(recipe))
        calibration = Calibration(
            device,
            key[1],
            key[2],
            batch.micro_batch,
            step_seconds,
            per_step,
            peak,
            mfu,
            actual.get("peak_memory_bytes", 0) / 1024**3 if actual.get("peak_memory_bytes") else None,
        )
        samples.setdefault(key, []).append((mfu, calibration))
    fitted = []
    for entries in samples.values():
        entries.sort(key=lambda item: item[0])
        median = entries[len(entries) // 2][1]
        save_calibration(median)
        fitted.append(median)
    if not fitted:
        raise UserError(f"--refit: no finished runs with plan.json and actual.json under {runs_dir}")
    return fitted
