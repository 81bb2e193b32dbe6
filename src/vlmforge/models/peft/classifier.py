"""A CLIP as an image classifier over class prompts, and what every method shares: freezing and the
count of trainable parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.functional import normalize

VISUAL_PREFIX = "visual."


def prompt_texts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major prompts: every template for the first class, then for the next."""
    return [template.format(name) for name in classnames for template in templates]


class ClipClassifier(nn.Module):
    """logits = exp(logit_scale) x cosine(image embedding, class embedding); a class embedding is the mean
    of its normalised prompt embeddings, renormalised (prompt ensembling, Radford et al. 2021 §3.1.4)."""

    def __init__(self, clip: nn.Module, prompt_tokens: torch.Tensor, templates: int) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("prompt_tokens", prompt_tokens, persistent=False)
        self.templates = templates
        self._frozen_classes: torch.Tensor | None = None

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def prompt_features(self) -> torch.Tensor:
        """[classes x templates, dim] embeddings of the class prompts."""
        return self.clip.encode_text(self.prompt_tokens)

    def text_trains(self) -> bool:
        return any(p.requires_grad for name, p in self.named_parameters() if not _is_visual(name))

    def class_embeddings(self) -> torch.Tensor:
        """[classes, dim], normalised; computed once when nothing on the text side trains."""
        if not self.text_trains():
            if self._frozen_classes is None:
                with torch.no_grad():
                    self._frozen_classes = self._ensemble(self.prompt_features())
            return self._frozen_classes
        return self._ensemble(self.prompt_features())

    def _ensemble(self, features: torch.Tensor) -> torch.Tensor:
        per_class = normalize(features, dim=-1).view(-1, self.templates, features.shape[-1]).mean(dim=1)
        return normalize(per_class, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images_emb = normalize(self.image_features(images), dim=-1)
        return self.clip.logit_scale.exp() * images_emb @ self.class_embeddings().T


def _is_visual(name: str) -> bool:
    """Parameters of the image side: the image tower and image-side method parts (``visual_*``)."""
    parts = name.split(".")
    return "visual" in parts or any(part.startswith("visual_") for part in parts)


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def trainable_share(module: nn.Module) -> dict[str, Any]:
    """Trainable and total parameter counts (shared tensors once) and the trainable percentage."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in module.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"trainable": trainable, "total": total, "percent": round(100 * trainable / max(total, 1), 4)}


def share_line(share: dict[str, Any]) -> str:
    return f"trainable parameters: {share['trainable']:,} of {share['total']:,} ({share['percent']:.4g}%)"
