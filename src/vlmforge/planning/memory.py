"""Memory per GPU: model states by strategy (ZeRO, Rajbhandari et al. 2020, §3) + activations.

Activations are measured, not guessed: one training forward of the real model on the meta device with
``torch.autograd.graph.saved_tensors_hooks`` sums the bytes autograd keeps for the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEEPSPEED = ("zero1", "zero2", "zero3")


def state_bytes(precision: str, strategy: str) -> tuple[int, int, int]:
    """Bytes per trainable parameter for AdamW: (weights, gradients, optimizer states).

    Lightning's mixed precision is autocast: weights, grads and moments stay fp32 (4 + 4 + 8) whatever the
    precision. DeepSpeed's mixed precision keeps 16-bit weights (2) and grads (2) plus an fp32 gradient
    partition (4), fp32 master weights and two moments (12): 2 + 18, as its own estimator counts
    (ZeRO, Rajbhandari et al. 2020, §3.1: 2 + 2 + K with K = 12).
    """
    if strategy in DEEPSPEED and precision != "32":
        return 2, 6, 12
    return 4, 4, 8


def nf4_bytes_per_param(block: int = 64, second_block: int = 256) -> float:
    """Bytes per frozen weight in QLoRA's 4-bit NormalFloat with double quantization (Dettmers et al. 2023,
    §3: 4 bits, plus one 8-bit absmax per ``block`` weights and one fp32 absmax per ``second_block`` of
    those: 8/64 + 32/(64*256) = 0.127 bits)."""
    constant_bits = 8 / block + 32 / (block * second_block)
    return (4 + constant_bits) / 8


ALLOCATOR_MARGIN = 1.10  # fragmentation and workspace: 10% on top (measured peaks run 5-15% over live bytes)
RUNTIME_GB = 1.0  # CUDA context, kernels, communication buffers per process


@dataclass(frozen=True)
class MemoryEstimate:
    strategy: str
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    total_gb: float


def is_weight(tensor: torch.Tensor) -> bool:
    """A parameter or a view of one (linear layers save ``weight.t()``): model state, not activations."""
    return isinstance(tensor, torch.nn.Parameter) or isinstance(tensor._base, torch.nn.Parameter)


class SavedBytes:
    """Context manager: sums the bytes autograd saves for backward while it is active."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if is_weight(tensor):
            return tensor
        key = id(tensor.untyped_storage()) if tensor.device.type != "meta" else id(tensor)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += tensor.numel() * tensor.element_size()
        return tensor

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


GPUS_PER_NODE = 8  # HYBRID_SHARD shards inside a node of this many GPUs and replicates across nodes


def shard_divisors(strategy: str, world: int) -> tuple[int, int, int]:
    """How many ways weights, grads and optimizer states are split across ``world`` devices."""
    node = min(world, GPUS_PER_NODE)
    return {
        "ddp": (1, 1, 1),
        "zero1": (1, 1, world),
        "zero2": (1, world, world),  # == FSDP SHARD_GRAD_OP
        "fsdp-hybrid": (node, node, node),
        "fsdp": (world, world, world),  # FULL_SHARD == ZeRO-3
        "zero3": (world, world, world),
    }[strategy]


def estimate_memory(
    trainable_params: int,
    frozen_params: int,
    activation_bytes_per_sample: int,
    micro_batch: int,
    precision: str,
    strategy: str,
    world: int,
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
    quantized_params: int = 0,
) -> MemoryEstimate:
    """Memory per device; ``quantized_params`` of the frozen parameters are QLoRA's 4-bit NF4 weights."""
    weight_b, grad_b, optim_b = state_bytes(precision, strategy)
    if cpu_offload:  # ZeRO-Offload: fp32 master weights, fp32 grads and Adam moments live in CPU memory
        grad_b, optim_b = min(grad_b, 2), 0
    frozen_b = 2 if precision != "32" else 4  # frozen towers keep only a working copy
    dw, dg, do = shard_divisors(strategy, world)
    gb = 1024**3
    frozen = (frozen_params - quantized_params) * frozen_b + quantized_params * nf4_bytes_per_param()
    weights = (trainable_params * weight_b + frozen) / dw / gb
    grads = trainable_params * grad_b / dg / gb
    optimizer = trainable_params * optim_b / do / gb
    act_scale = 0.5 if precision != "32" else 1.0  # measured in fp32 on meta; autocast keeps most in 16-bit
    if activation_checkpointing:
        act_scale *= 0.25  # keep block inputs only; recompute inside blocks (about 4x less, Chen et al. 2016)
    activations = activation_bytes_per_sample * micro_batch * act_scale / gb
    total = (weights + grads + optimizer + activations) * ALLOCATOR_MARGIN + RUNTIME_GB
    return MemoryEstimate(strategy, weights, grads, optimizer, activations, total)
