"""sklearn's digits: 1,797 real 8x8 handwritten digits (UCI), captioned from templates. Ships offline."""

from __future__ import annotations

import numpy as np
import torch

from vlmforge.config.schema import DigitsData
from vlmforge.data.base import ImageTextSet, fingerprint_bytes

CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}.",
    "a drawing of a {}.",
    "an image of the digit {}.",
    "a scan of a handwritten {}.",
]
DIGITS_COUNT = 1797


def in_memory_bytes(image_size: int) -> int:
    """What ``digits_set`` holds: every digit as 3 x side x side float32 (checked before it is built)."""
    return DIGITS_COUNT * 3 * image_size * image_size * 4


def digits_set(cfg: DigitsData) -> ImageTextSet:
    """All 1,797 digits, upscaled (bilinear) to ``cfg.image_size`` and normalised, held in memory."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    kept = np.flatnonzero(np.isin(raw.target, cfg.classes)) if cfg.classes else np.arange(len(raw.target))
    pixels = torch.from_numpy(raw.images[kept].astype(np.float32) / 16.0)  # [N, 8, 8] in [0, 1]
    up = torch.nn.functional.interpolate(
        pixels[:, None], size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False
    )
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    images = ((up.expand(-1, 3, -1, -1) - mean) / std).contiguous()
    labels = raw.target[kept].astype(np.int64)
    templates = cfg.templates or TEMPLATES
    captions = [[t.format(CLASSNAMES[y]) for t in templates] for y in labels]
    return ImageTextSet(
        name="digits",
        keys=[f"digits-{i:04d}" for i in kept],
        captions=captions,
        load_image=images.__getitem__,
        labels=labels,
        classnames=list(CLASSNAMES),
        prompts=tuple(templates),
        fingerprint=fingerprint_bytes(
            raw.images[kept].tobytes(), labels.tobytes(), "\n".join(templates).encode()
        ),
    )
