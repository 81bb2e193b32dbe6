"""Training FLOPs per sample, counted on the real model.

The model is built on the meta device (no memory, no weights) and one training step on a single sample
is run under ``torch.utils.flop_counter.FlopCounterMode``: resolution, patch size, sequence length,
masked patches and frozen towers (no weight-gradient FLOPs) all count because they change the
operations that actually run. FLOPs are counted as 2 x multiply-accumulates, as in the scaling-law
literature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class FlopCount:
    forward: int
    backward: int

    @property
    def train(self) -> int:
        return self.forward + self.backward


def count_train_flops(
    build: Callable[[], torch.nn.Module], step: Callable[[torch.nn.Module], torch.Tensor]
) -> FlopCount:
    """FLOPs of ``step(model)`` (which returns a scalar loss) forward and backward, on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build()
    model.train()
    with FlopCounterMode(display=False) as forward_counter:
        loss = step(model)
    forward = int(forward_counter.get_total_flops())
    if not loss.requires_grad:  # everything frozen: inference only
        return FlopCount(forward, 0)
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    return FlopCount(forward, int(backward_counter.get_total_flops()))


def transformer_train_flops(params: int, tokens: int) -> int:
    """The 6·N·D rule for a dense transformer (Kaplan et al. 2020, eq. 2.1; attention terms left out)."""
    return 6 * params * tokens


def model_flops_per_sample(cfg: Any, vocab_size: int, frozen: tuple[str, ...] = ()) -> FlopCount:
    """One sample through the recipe's model (its family's ``probe_loss``), forward and backward.

    ``frozen`` names parameter prefixes (e.g. ``("visual.",)``) that receive no gradient. Patch dropout
    (FLIP masking) configured on the model is active, since the model is in training mode.
    """
    from vlmforge.families import family_for

    models = family_for(cfg).models

    def frozen_build() -> torch.nn.Module:
        model = models.build_model(cfg, vocab_size, device="meta")
        for name, param in model.named_parameters():
            if name.startswith(frozen):
                param.requires_grad_(False)
        return model

    return count_train_flops(frozen_build, probe_step(cfg, vocab_size))


def probe_step(cfg: Any, vocab_size: int, batch_size: int = 1) -> Callable[[torch.nn.Module], torch.Tensor]:
    """``model -> scalar``: the family's ``probe_loss`` on ``batch_size`` samples on the model's device."""
    from vlmforge.families import family_for

    models = family_for(cfg).models

    def step(model: torch.nn.Module) -> torch.Tensor:
        device = next(model.parameters()).device.type
        return models.probe_loss(cfg, model, batch_size, device, vocab_size)

    return step
