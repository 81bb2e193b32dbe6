"""Full finetuning of the image tower with a zero-shot-initialised linear head, and WiSE-FT's weight-space
ensemble (Wortsman et al. 2022, eq. 1): theta_alpha = (1 - alpha) theta_zero-shot + alpha theta_finetuned."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import normalize

from vlmforge.models.peft.classifier import ClipClassifier, freeze


class FullFinetuneClassifier(ClipClassifier):
    """The image tower and ``head`` (the zero-shot class embeddings to start with) train; the text tower
    is used once, for the head's start."""

    def __init__(self, clip: nn.Module, prompt_tokens: torch.Tensor, templates: int) -> None:
        super().__init__(clip, prompt_tokens, templates)
        freeze(clip)
        with torch.no_grad():
            start = self._ensemble(self.prompt_features())
        self.head = nn.Parameter(start.clone())
        for parameter in clip.visual.parameters():
            parameter.requires_grad_(True)

    def class_embeddings(self) -> torch.Tensor:
        return normalize(self.head, dim=-1)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors, by name."""
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def interpolate(
    zero_shot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT's mix of two states with the same names: alpha = 0 is zero-shot, 1 finetuned."""
    return {name: torch.lerp(zero_shot[name], finetuned[name], alpha) for name in finetuned}


def load_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """The accuracy-vs-alpha curves of several folds averaged point by point (the same alphas in each)."""
    alphas = [row["alpha"] for row in curves[0]]
    if any([row["alpha"] for row in curve] != alphas for curve in curves):
        raise ValueError("the curves must sweep the same alphas in the same order")
    return [
        {"alpha": alpha, "top1": sum(curve[i]["top1"] for curve in curves) / len(curves)}
        for i, alpha in enumerate(alphas)
    ]


def best_point(curve: list[dict[str, float]]) -> dict[str, float]:
    """The curve's highest-top-1 point; ties go to the alpha nearest 0.5, the fixed mix WiSE-FT uses when
    nothing chooses one (Wortsman et al. 2022), then to the smaller alpha."""
    # rounded: 0.7 - 0.5 is a hair under 0.5 - 0.3 in floating point, yet the two are equally far
    return max(curve, key=lambda row: (row["top1"], -round(abs(row["alpha"] - 0.5), 9), -row["alpha"]))
