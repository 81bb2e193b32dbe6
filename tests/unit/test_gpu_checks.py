"""benchmarks/gpu_checks.py: its CPU-side logic (planned vs measured memory), and its refusal without CUDA."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from vlmforge.planning.memory import ALLOCATOR_MARGIN, RUNTIME_GB

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_checks() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("gpu_checks")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_planned_memory_is_compared_as_live_bytes(gpu_checks: ModuleType) -> None:
    # 3.2 GB planned = (live x 1.10 + 1.0); live = 2.2 / 1.1 = 2.0 GB, against 2.5 GB measured: 0.8
    row = gpu_checks.compare_memory("case", 8, 3.2, 2.5)
    assert row["planned_live_gb"] == pytest.approx((3.2 - RUNTIME_GB) / ALLOCATOR_MARGIN)
    assert row["planned_over_measured"] == pytest.approx(0.8)
    assert row["within_tolerance"]
    assert not gpu_checks.compare_memory("case", 8, 3.2, 1.0)["within_tolerance"]


def test_planned_total_is_the_recipe_memory_on_one_gpu(gpu_checks: ModuleType) -> None:
    recipe, _, micro, planned = gpu_checks.planned_total_gb("debug/clip-tiny", 4)
    assert recipe.world_size == 1 and micro == 4
    assert planned > RUNTIME_GB  # model states and activations on top of the runtime


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_without_cuda_it_refuses_and_writes_nothing(
    gpu_checks: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(gpu_checks, "RESULT", tmp_path / "gpu_checks.json")
    assert gpu_checks.main() == 1
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu_checks.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_planned_memory_of_a_debug_recipe_is_near_the_measured_peak(gpu_checks: ModuleType) -> None:
    from vlmforge.planning.calibrate import time_training_steps

    recipe, phase, micro, planned = gpu_checks.planned_total_gb("debug/clip-tiny", None)
    _, measured, _ = time_training_steps(recipe, phase, micro, steps=3, warmup=1, device="cuda")
    assert measured is not None
    assert gpu_checks.compare_memory("debug/clip-tiny", micro, planned, measured)["within_tolerance"]
