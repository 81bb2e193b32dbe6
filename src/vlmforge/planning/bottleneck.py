"""What bounds a planned configuration, and which configuration a plan picks.

A row is bound by the data loader when the images per second each GPU must be fed exceed what its CPU
cores decode; by communication when exposed communication takes more than ``COMM_BOUND_SHARE`` of the
step; by memory when the micro-batch had to be cut below the per-GPU batch (gradient accumulation) or
activations recomputed / optimizer states offloaded to fit; by fixed overhead when the per-step overhead
outlasts the compute; otherwise by compute.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from vlmforge.planning.utilisation import StepTime

COMM_BOUND_SHARE = 0.3
# Decode + resize of 224 px JPEGs by one loader process: 328 images/s measured on this project's CPU
# host (benchmarks/results/loader.json, workers=0), rounded down; a GPU node gives each GPU about 12 cores
# (AWS p5.48xlarge: 192 vCPUs = 96 cores for 8 GPUs).
DEFAULT_IMAGES_PER_S_PER_CORE = 300.0
DEFAULT_CORES_PER_GPU = 12
# Pick: the fastest configuration costing at most this factor times the cheapest one.
PICK_SLACK = 1.25


def decode_rate_file() -> Path:
    root = Path(os.environ.get("VLMFORGE_CACHE", Path.home() / ".cache" / "vlmforge"))
    return root / "decode_rate.json"


def record_decode_rate(images_per_s: float, path: Path | None = None) -> Path:
    """Save the one-process decode rate ``vlmforge data check`` measured here, for later plans."""
    path = path or decode_rate_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"images_per_s": images_per_s}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def loader_images_per_s_per_gpu(path: Path | None = None) -> tuple[float, str]:
    """(images/s one GPU's loader workers decode, where the figure comes from): the per-process rate
    recorded in ``decode_rate.json`` ({"images_per_s": ...}, e.g. from ``vlmforge data check``) when
    there is one, else the documented default; times DEFAULT_CORES_PER_GPU loader processes."""
    path = path or decode_rate_file()
    try:
        rate = float(json.loads(path.read_text(encoding="utf-8"))["images_per_s"])
        source = f"measured ({path})"
    except (OSError, ValueError, KeyError, TypeError):
        rate, source = DEFAULT_IMAGES_PER_S_PER_CORE, "default (300 images/s per core)"
    if not rate > 0:
        rate, source = DEFAULT_IMAGES_PER_S_PER_CORE, "default (300 images/s per core)"
    return rate * DEFAULT_CORES_PER_GPU, source


def bottleneck(
    step: StepTime, samples_per_gpu_per_step: float, memory_limited: bool, loader_images_per_s: float
) -> str:
    """'data loader', 'communication', 'memory', 'overhead' or 'compute' (the first that applies)."""
    needed = samples_per_gpu_per_step / step.total_s if step.total_s > 0 else 0.0
    if needed > loader_images_per_s:
        return "data loader"
    if step.comm_s > COMM_BOUND_SHARE * step.total_s:
        return "communication"
    if memory_limited:
        return "memory"
    if step.overhead_s > step.compute_s:
        return "overhead"
    return "compute"


def pick(wall_hours: Sequence[float], usd: Sequence[float], candidates: Sequence[int]) -> int | None:
    """Index of the fastest candidate costing at most PICK_SLACK x the cheapest candidate (ties: the
    cheaper one); None when there is no candidate."""
    if not candidates:
        return None
    cheapest = min(usd[i] for i in candidates)
    affordable = [i for i in candidates if usd[i] <= PICK_SLACK * cheapest]
    return min(affordable, key=lambda i: (wall_hours[i], usd[i]))
