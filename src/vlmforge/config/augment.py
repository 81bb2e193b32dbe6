"""The `model.augment` section: CLIP-rocket's cross-modal augmentation (Fini et al. 2023, "Improved baselines
for vision-language pre-training", §3 and the official facebookresearch/clip-rocket repository).

Each image is seen through one weak view (the usual InfoNCE loss, through the model's own projections) and
``strong_views`` strong views; each caption through ``strong_views`` EDA-style augmentations (random word
swap or deletion). The strong image and text views meet in a second InfoNCE loss through separate projection
heads with their own temperature, and the two losses are averaged as in CLIP-rocket.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section


class ImageAugment(Section):
    """One kind of image view: random resized crop, flip, colour jitter, grayscale (SimCLR's, Chen et al.
    2020), applied on the batch tensors."""

    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="Random resized crop: range of the kept fraction of the image area."
    )
    flip: bool = Field(True, description="Random horizontal flips.")
    color_jitter: float = Field(
        0.4, ge=0, lt=1, description="Brightness/contrast/saturation factors drawn in 1 +- this (p = 0.8)."
    )
    grayscale_p: float = Field(0.2, ge=0, le=1, description="Probability of a grayscale view.")

    @model_validator(mode="after")
    def _scale_range(self) -> ImageAugment:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        return self


def weak_view() -> ImageAugment:
    """CLIP-rocket's weak view: a random resized crop keeping 50-100% of the image, nothing else."""
    return ImageAugment(crop_scale=(0.5, 1.0), flip=False, color_jitter=0.0, grayscale_p=0.0)


class TextAugment(Section):
    """EDA's random swap and random deletion (Wei and Zou 2019, §2.1), one of them drawn per caption view in
    proportion to its weight, as CLIP-rocket's tokenizer does. (EDA's synonym replacement needs WordNet and
    is left out; with CLIP-rocket's weights 0.2 swap / 0.1 deletion the two left keep their 2:1 ratio.)"""

    keep_weight: float = Field(0.0, ge=0, description="Weight of leaving the caption as it is.")
    swap_weight: float = Field(0.2, ge=0, description="Weight of swapping two random words.")
    deletion_weight: float = Field(0.1, ge=0, description="Weight of deleting random words.")
    swaps: int = Field(1, ge=1, description="Word swaps a swap makes (EDA's n).")
    deletion_p: float = Field(0.1, gt=0, lt=1, description="Each word's deletion probability (EDA's p).")

    @model_validator(mode="after")
    def _some_weight(self) -> TextAugment:
        if self.keep_weight + self.swap_weight + self.deletion_weight == 0:
            raise ValueError("keep_weight, swap_weight and deletion_weight cannot all be 0")
        return self


class AugmentConfig(Section):
    """CLIP-rocket: a weak image view for the contrastive loss, and strong image and caption views scored
    against each other through separate projection heads."""

    strong_views: int = Field(
        2, ge=1, le=8, description="Strong views per image and per caption (CLIP-rocket: 2)."
    )
    weak: ImageAugment = Field(default_factory=weak_view, description="The weak view of each image.")
    strong: ImageAugment = Field(default_factory=ImageAugment, description="Each strong view of an image.")
    text: TextAugment = Field(default_factory=TextAugment, description="Each strong view of a caption.")
    heads: Literal["mlp", "linear"] = Field(
        "mlp",
        description="Projection heads of the strong views: 3-layer MLPs (CLIP-rocket's default) or linear "
        "maps (its `linear` option; tiny models learn faster with these).",
    )
    hidden_dim: int = Field(
        4096, ge=8, description="Hidden width of the MLP heads of the strong views (CLIP-rocket: 4096)."
    )
    init_logit_scale: float = Field(
        math.log(1 / 0.1),
        description="Initial log temperature of the strong-view loss, CLIP-rocket's log(1/0.1).",
    )
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="Label smoothing of the strong-view loss (CLIP-rocket: 0.1)."
    )
