"""Run the GPU-only tests (`pytest -m gpu`) and record what ran, where, and the outcome.

    python benchmarks/gpu_checks.py            # on a machine with a CUDA GPU

Appends one entry to benchmarks/results/gpu_checks.json: date, device name and count, torch/CUDA versions,
every gpu-marked test with its outcome (passed / failed / skipped, with the message), and the planner's
memory per GPU next to torch.cuda.max_memory_allocated for the debug recipes and a ViT-B/16 CLIP at a few
micro-batches (real training steps on one GPU). Without a CUDA device nothing is run and the file is left
as it is (exit code 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR

REPO = Path(__file__).resolve().parents[1]
RESULT = RESULTS_DIR / "gpu_checks.json"
# (recipe, micro-batches to time: None = the recipe's own); every case trains on one GPU
MEMORY_CASES: tuple[tuple[str, tuple[int | None, ...]], ...] = (
    ("debug/clip-tiny", (None,)),
    ("debug/siglip-tiny", (None,)),
    ("debug/flip-tiny", (None,)),
    ("debug/coca-tiny", (None,)),
    ("clip/vit-b-16", (8, 32, 64)),
)
ONE_GPU = ("train.devices=1", "train.num_nodes=1", "train.strategy.kind=ddp")
MEMORY_TOLERANCE = 0.25  # planned live bytes within 25% of the measured peak


def planned_live_gb(total_gb: float) -> float:
    """The plan's GB/GPU less what max_memory_allocated never sees: the CUDA context and runtime buffers
    (RUNTIME_GB) and the allocator's fragmentation margin (ALLOCATOR_MARGIN), both in planning/memory.py."""
    from vlmforge.planning.memory import ALLOCATOR_MARGIN, RUNTIME_GB

    return (total_gb - RUNTIME_GB) / ALLOCATOR_MARGIN


def compare_memory(
    case: str, micro_batch: int, planned_total_gb: float, measured_gb: float
) -> dict[str, Any]:
    planned = planned_live_gb(planned_total_gb)
    ratio = planned / measured_gb if measured_gb > 0 else float("inf")
    return {
        "case": case,
        "micro_batch": micro_batch,
        "planned_gb_per_gpu": round(planned_total_gb, 3),
        "planned_live_gb": round(planned, 3),
        "measured_max_allocated_gb": round(measured_gb, 3),
        "planned_over_measured": round(ratio, 3),
        "within_tolerance": abs(ratio - 1) <= MEMORY_TOLERANCE,
    }


def planned_total_gb(name: str, micro_batch: int | None) -> tuple[Any, Any, int, float]:
    """(recipe on one GPU, its costliest phase, micro-batch, planned GB per GPU), counted on meta."""
    from vlmforge.config.load import load_recipe
    from vlmforge.config.shipped import find_recipe
    from vlmforge.planning.fits import recipe_memory
    from vlmforge.planning.phases import phase_cost, phases

    recipe = load_recipe("pretrain", find_recipe(name), list(ONE_GPU))
    candidates = phases(recipe)
    costs = [phase_cost(phase) for phase in candidates]
    index = max(range(len(costs)), key=lambda i: costs[i].total_flops)
    micro = micro_batch or costs[index].micro_batch
    return recipe, candidates[index], micro, recipe_memory(recipe, costs[index], micro).total_gb


def memory_checks() -> list[dict[str, Any]]:
    """Planned vs measured peak memory for every case, measured by real training steps on cuda:0."""
    import torch

    from vlmforge.planning.calibrate import time_training_steps

    rows = []
    for name, micro_batches in MEMORY_CASES:
        for micro_batch in micro_batches:
            recipe, phase, micro, planned = planned_total_gb(name, micro_batch)
            torch.cuda.empty_cache()
            _, measured, _ = time_training_steps(recipe, phase, micro, steps=3, warmup=1, device="cuda")
            rows.append(compare_memory(name, micro, planned, measured or 0.0))
            print(rows[-1])
    return rows


def outcomes(junit: Path) -> list[dict[str, str]]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "")[:500]
        rows.append(
            {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message}
        )
    return rows


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: the gpu checks need one (nothing recorded)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "gpu.xml"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={junit}", "tests"], cwd=REPO
        )
        rows = outcomes(junit) if junit.is_file() else []
    memory = memory_checks()
    entry = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pytest_exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "tests": rows,
        "memory": memory,
    }
    history = json.loads(RESULT.read_text())["runs"] if RESULT.is_file() else []
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({"benchmark": "gpu_checks", "runs": [*history, entry]}, indent=2) + "\n")
    passed = sum(r["outcome"] == "passed" for r in rows)
    close = sum(r["within_tolerance"] for r in memory)
    print(f"{passed}/{len(rows)} gpu tests passed on {entry['device']} -> {RESULT}")
    print(f"planned memory within {MEMORY_TOLERANCE:.0%} of the measured peak: {close}/{len(memory)} cases")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
