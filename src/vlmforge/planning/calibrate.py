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
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from vlmforge.config.schema import PretrainRecipe, TrainingRecipe
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
    # reading the recipe's own data here (decode, transform, tokenize, collate) in one process; None when
    # the data is not on this machine
    data_seconds_per_sample: float | None = None
    loader_workers: int = 0

    def predict_step_seconds(self, micro_batch: int) -> float:
        """Step time at another micro-batch: compute from the two-point fit (overhead + per-sample x batch);
        without loader workers the batch is read in the training process first, with ``w`` workers reading
        ahead the slower of compute and reading (w processes in parallel) sets the pace."""
        compute = self.overhead_seconds + self.seconds_per_sample * micro_batch
        if self.data_seconds_per_sample is None:
            return compute
        reading = self.data_seconds_per_sample * micro_batch
        return compute + reading if self.loader_workers == 0 else max(compute, reading / self.loader_workers)


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


def time_data_loading(recipe: PretrainRecipe, min_seconds: float = MIN_TIMED_SECONDS / 2) -> float | None:
    """Seconds per training sample to read the recipe's data in one process, as the training loader does
    (image decode + transform, caption choice + tokenization, collation), or None when the data cannot be
    read on this machine (it often lives only on the cluster)."""
    from vlmforge.data.loader import CaptionedImages, collate
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.errors import UserError
    from vlmforge.families import family_for

    try:
        train, _ = train_val_split(recipe.data)
    except (UserError, OSError):
        return None
    if len(train) == 0:
        return None
    cfg = recipe.model.model_copy(update={"pretrained": None})
    models = family_for(cfg).models
    tokenizer = build_tokenizer(cfg.tokenizer, train.all_captions())
    context = models.context_length(cfg, models.build_model(cfg, tokenizer.vocab_size, device="meta"))
    samples = CaptionedImages(train, tokenizer, context, recipe.seed)
    order = np.random.default_rng(recipe.seed).permutation(len(train))
    micro, read = recipe.micro_batch_size, 0
    start = time.perf_counter()
    while read < micro or time.perf_counter() - start < min_seconds:
        collate([samples[(0, read + j, int(order[(read + j) % len(order)]))] for j in range(micro)])
        read += micro
    return (time.perf_counter() - start) / read


def time_training_steps(
    recipe: TrainingRecipe,
    phase: Phase,
    micro_batch: int,
    steps: int = 6,
    warmup: int = 2,
    device: str = "cpu",
) -> tuple[float, float | None]:
    """(median seconds per optimizer step, peak memory GB or None) of real training steps.

    The steps run through the same lean Lightning Trainer as training (precision, gradient clipping,
    optimizer, per-step hooks), on the phase's probe loss over synthetic inputs, so that framework
    overhead, which dominates millisecond steps, is part of the measurement."""
    import tempfile

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
    timer = StepTimer(warmup + steps, MIN_TIMED_SECONDS, warmup)
    probe = ProbeModule(phase, micro_batch)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="vlmforge-calibrate-") as scratch:
        trainer = build_trainer(one_device, [timer], scratch, max_steps=1_000_000, accumulate=1)
        loader = torch.utils.data.DataLoader(range(1_000_000), batch_size=1)
        trainer.fit(probe, train_dataloaders=loader)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    return statistics.median(timer.times), peak
