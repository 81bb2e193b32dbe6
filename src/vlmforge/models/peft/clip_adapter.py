"""CLIP-Adapter (Gao et al. 2021, §3.2): a two-layer bottleneck MLP on a tower's output embedding, blended
with the frozen embedding by a residual ratio."""

from __future__ import annotations

import torch
from torch import nn

from vlmforge.config.peft import ClipAdapter
from vlmforge.models.peft.classifier import ClipClassifier, freeze


def bottleneck(width: int, reduction: int) -> nn.Sequential:
    """Linear (no bias) -> ReLU -> Linear (no bias) -> ReLU, as CLIP-Adapter's official ``Adapter``."""
    hidden = max(1, width // reduction)
    return nn.Sequential(
        nn.Linear(width, hidden, bias=False),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, width, bias=False),
        nn.ReLU(inplace=True),
    )


class ClipAdapterClassifier(ClipClassifier):
    """Frozen CLIP; ``ratio * adapter(x) + (1 - ratio) * x`` on the chosen branches' embeddings."""

    def __init__(
        self, clip: nn.Module, prompt_tokens: torch.Tensor, templates: int, cfg: ClipAdapter, width: int
    ) -> None:
        super().__init__(clip, prompt_tokens, templates)
        freeze(clip)
        self.ratio = cfg.ratio
        self.visual_adapter = bottleneck(width, cfg.reduction) if "visual" in cfg.branches else None
        self.text_adapter = bottleneck(width, cfg.reduction) if "text" in cfg.branches else None

    def _blend(self, adapter: nn.Module | None, features: torch.Tensor) -> torch.Tensor:
        if adapter is None:
            return features
        return self.ratio * adapter(features) + (1 - self.ratio) * features

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.clip.encode_image(images)
        return self._blend(self.visual_adapter, features)

    def prompt_features(self) -> torch.Tensor:
        with torch.no_grad():
            features = self.clip.encode_text(self.prompt_tokens)
        return self._blend(self.text_adapter, features)
