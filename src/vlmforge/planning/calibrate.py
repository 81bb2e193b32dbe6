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

import torch

if TYPE_CHECKING:
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


def time_training_steps(
    phase: Phase, precision: str, micro_batch: int, steps: int = 6, warmup: int = 2, device: str = "cpu"
) -> tuple[float, float | None]:
    """(median seconds per optimizer step, peak memory GB or None) for real steps on random inputs."""
    model = phase.build(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision != "32")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    step = 0
    # at least `steps` timed steps and MIN_TIMED_SECONDS of them: millisecond steps need many samples
    while step < warmup + steps or sum(times) < MIN_TIMED_SECONDS:
        start = time.perf_counter()
        with autocast:
            loss = phase.probe(model, micro_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
        step += 1
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    return statistics.median(times), peak
