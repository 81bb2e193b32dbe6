"""Does a recipe, as written, fit the machine it is about to run on? The memory per device of its own
layout (strategy, micro-batch, precision, activation checkpointing, offload; ``planning.memory``) against
the device's memory — the GPU's, or on CPU this host's available RAM shared by its processes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmforge.config.schema import DeepSpeedStrategy, FSDPStrategy, TrainConfig, TrainingRecipe
from vlmforge.planning.memory import MemoryEstimate, estimate_memory
from vlmforge.planning.phases import PhaseCost

FSDP_SHARDING = {"full": "fsdp", "hybrid": "fsdp-hybrid", "grad_op": "zero2"}  # as planning.memory names them


def memory_strategy(train: TrainConfig) -> tuple[str, bool]:
    """(strategy as ``planning.memory`` names it, optimizer states offloaded to CPU)."""
    strategy = train.strategy
    if isinstance(strategy, FSDPStrategy):
        return FSDP_SHARDING[strategy.sharding], strategy.cpu_offload
    if isinstance(strategy, DeepSpeedStrategy):
        return f"zero{strategy.stage}", strategy.offload_optimizer
    return "ddp", False


def recipe_memory(recipe: TrainingRecipe, cost: PhaseCost, micro_batch: int) -> MemoryEstimate:
    """Memory per device of one phase trained exactly as the recipe says."""
    strategy, offload = memory_strategy(recipe.train)
    return estimate_memory(
        cost.trainable_params,
        cost.frozen_params,
        cost.activation_bytes_per_sample,
        micro_batch,
        recipe.train.precision,
        strategy,
        recipe.world_size,
        activation_checkpointing=recipe.train.activation_checkpointing,
        cpu_offload=offload,
        quantized_params=cost.quantized_params,
    )


@dataclass(frozen=True)
class DeviceMemory:
    name: str  # "cuda:0 (NVIDIA H100 80GB HBM3)" or "host RAM"
    gb: float  # per training process


def host_available_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """RAM the kernel could hand out now (MemAvailable), or None where it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_memory(on_cpu: bool, processes_here: int) -> DeviceMemory | None:
    """What each training process has: the GPU's memory, or this host's available RAM shared by the
    processes started here. None where it cannot be known (a GPU run on a machine without one, which the
    device requirements report)."""
    if on_cpu:
        available = host_available_gb()
        return None if available is None else DeviceMemory("host RAM", available / processes_here)
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return DeviceMemory(f"cuda:0 ({props.name})", props.total_memory / 1024**3)
