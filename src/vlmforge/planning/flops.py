"""Training FLOPs and saved activations per sample, counted on the real model.

The model is built on the meta device (no memory, no weights) and one training step on a single sample
is run under ``torch.utils.flop_counter.FlopCounterMode``: resolution, patch size, sequence length,
masked patches and frozen towers (no weight-gradient FLOPs) all count because they change the
operations that actually run. FLOPs are counted as 2 x multiply-accumulates, as in the scaling-law
literature. The bytes autograd saves for backward are summed at the same time (``SavedBytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlmforge.planning.memory import SavedBytes


@dataclass(frozen=True)
class StepCount:
    forward: int
    backward: int
    saved_bytes: int  # activations autograd keeps for backward

    @property
    def train(self) -> int:
        return self.forward + self.backward


def count_step(model: torch.nn.Module, step: Callable[[torch.nn.Module], torch.Tensor]) -> StepCount:
    """FLOPs of ``step(model)`` (which returns a scalar loss) forward and backward, and the activation
    bytes it saves; ``model`` is in training mode (patch dropout and the like active)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as forward_counter, SavedBytes() as saved:
        loss = step(model)
    forward = int(forward_counter.get_total_flops())
    if not loss.requires_grad:  # everything frozen: inference only
        return StepCount(forward, 0, saved.bytes)
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    return StepCount(forward, int(backward_counter.get_total_flops()), saved.bytes)


def count_on_meta(
    build: Callable[[], torch.nn.Module], step: Callable[[torch.nn.Module], torch.Tensor]
) -> StepCount:
    """``count_step`` on the model ``build()`` makes on the meta device."""
    with torch.device("meta"):
        model = build()
    return count_step(model, step)
