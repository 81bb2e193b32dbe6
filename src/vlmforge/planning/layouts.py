"""Ways to fit a training phase on N accelerators (strategy, activation checkpointing, offload) and the
cheapest one that fits each accelerator's memory, with the micro-batch and accumulation it trains with."""

from __future__ import annotations

from dataclasses import dataclass

from vlmforge.planning.accelerators import Accelerator
from vlmforge.planning.memory import GPUS_PER_NODE, estimate_memory
from vlmforge.planning.phases import PhaseCost


@dataclass(frozen=True)
class Layout:
    """A way to fit training on the GPUs, with the compute it costs relative to plain DDP."""

    strategy: str
    checkpointing: bool = False
    offload: bool = False

    @property
    def compute_factor(self) -> float:
        # Activation checkpointing recomputes the forward in backward: 4/3 of the FLOPs (Chen et al. 2016).
        return 4 / 3 if self.checkpointing else 1.0

    @property
    def label(self) -> str:
        return self.strategy + ("+offload" if self.offload else "") + ("+ckpt" if self.checkpointing else "")

    def recipe_overrides(self, count: int, micro_batch: int | None = None) -> str:
        """Recipe overrides that train ``count`` GPUs with this layout (and ``micro_batch`` if given)."""
        nodes, devices = (count // GPUS_PER_NODE, GPUS_PER_NODE) if count % GPUS_PER_NODE == 0 else (1, count)
        parts = [f"train.num_nodes={nodes}", f"train.devices={devices}", *RECIPE_STRATEGY[self.strategy]]
        if self.offload:
            parts.append(
                "train.strategy.offload_optimizer=true"
                if self.strategy.startswith("zero")
                else "train.strategy.cpu_offload=true"
            )
        if self.checkpointing:
            parts.append("train.activation_checkpointing=true")
        if micro_batch is not None:
            parts.append(f"train.micro_batch_size={micro_batch}")
        return " ".join(parts)


# How each layout the memory model prices (planning/memory.py) is set in a recipe's train.strategy.
RECIPE_STRATEGY = {
    "ddp": ("train.strategy.kind=ddp",),
    "zero2": ("train.strategy.kind=deepspeed", "train.strategy.stage=2"),
    "zero3": ("train.strategy.kind=deepspeed", "train.strategy.stage=3"),
    "fsdp": ("train.strategy.kind=fsdp", "train.strategy.sharding=full"),
    "fsdp-hybrid": ("train.strategy.kind=fsdp", "train.strategy.sharding=hybrid"),
}


# Tried in this order: least communication and recomputation first.
LAYOUTS = (
    Layout("ddp"),
    Layout("zero2"),
    Layout("fsdp-hybrid"),
    Layout("fsdp"),
    Layout("ddp", checkpointing=True),
    Layout("fsdp", checkpointing=True),
    Layout("zero3", checkpointing=True, offload=True),
)
GOOD_MICRO_BATCH = 8  # below this, GPUs run far under the utilisation prior: prefer another layout first


def choose(
    accel: Accelerator, count: int, cost: PhaseCost, precision: str
) -> tuple[Layout, int, int, float] | str:
    """Cheapest fitting (layout, micro-batch, accumulation, GB/GPU), or the reason nothing fits.

    Frozen parameters hold only their working copy: no gradients, no optimizer states.
    First pass: every layout at micro-batches >= GOOD_MICRO_BATCH; second pass: down to 1."""
    global_batch = cost.global_batch
    if global_batch % count:
        return f"global batch {global_batch} does not split over {count} GPUs"
    largest = global_batch // count
    smallest_gb = None
    for floor in (min(GOOD_MICRO_BATCH, largest), 1):
        for layout in LAYOUTS:
            if cost.replicated and layout.strategy != "ddp":
                continue
            micro = largest
            while micro >= floor:
                mem = estimate_memory(
                    cost.trainable_params,
                    cost.frozen_params,
                    cost.activation_bytes_per_sample,
                    micro,
                    precision,
                    layout.strategy,
                    count,
                    activation_checkpointing=layout.checkpointing,
                    cpu_offload=layout.offload,
                    quantized_params=cost.quantized_params,
                )
                smallest_gb = mem.total_gb if smallest_gb is None else min(smallest_gb, mem.total_gb)
                if mem.total_gb <= accel.memory_gb:
                    return layout, micro, global_batch // (micro * count), mem.total_gb
                if micro % 2:
                    break
                micro //= 2
    return f"needs {smallest_gb:.0f} GB/GPU even at micro-batch 1 with offload (has {accel.memory_gb:.0f})"
