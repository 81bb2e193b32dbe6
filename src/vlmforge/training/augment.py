"""SimCLR-style image views for SLIP's self-supervised term (Chen et al. 2020, §3 and appendix A; Mu et al.
2022): random resized crop, horizontal flip, colour jitter (brightness, contrast, saturation) and grayscale.

Applied to the batch tensors on their device in a few batched ops (``affine_grid`` + ``grid_sample`` for the
crop and flip), with per-sample parameters drawn from ``(seed, epoch, sample index, view)``: views are the
same whatever the device count and batch split, and reproducible. (torchvision's ``transforms.v2`` draws one
set of parameters per call from the global generator, so per-sample seeded views would need a Python loop
over the images.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vlmforge.config.augment import ImageAugment

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # aspect ratios of the crop, as torchvision's default
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights


def view_params(cfg: ImageAugment, seed: int, epoch: int, indices: Sequence[int], view: int) -> torch.Tensor:
    """[B, 9] per-sample parameters: crop width, height, centre x, y (fractions of the side), flip sign,
    brightness, contrast and saturation factors, grayscale (0/1)."""
    rows = []
    for index in indices:
        rng = np.random.default_rng([seed, epoch, int(index), 3 + view])
        area = rng.uniform(*cfg.crop_scale)
        ratio = math.exp(rng.uniform(*_LOG_RATIO))
        w, h = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
        cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
        flip = -1.0 if cfg.flip and rng.random() < 0.5 else 1.0
        jitter = (
            rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter, 3) if rng.random() < 0.8 else np.ones(3)
        )
        gray = float(rng.random() < cfg.grayscale_p)
        rows.append([w, h, cx, cy, flip, *jitter, gray])
    return torch.tensor(rows, dtype=torch.float32)


def augment(
    images: torch.Tensor, params: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """One view of normalised ``images`` [B, 3, H, W] under ``params`` from ``view_params``, normalised."""
    params = params.to(device=images.device, dtype=images.dtype)
    w, h, cx, cy, flip, brightness, contrast, saturation, gray = params.unbind(1)
    zero = torch.zeros_like(w)
    theta = torch.stack(
        [torch.stack([w * flip, zero, 2 * cx - 1], 1), torch.stack([zero, h, 2 * cy - 1], 1)], 1
    )  # output pixel -> input pixel, in [-1, 1] coordinates
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    pixels = images * std_t + mean_t
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(
        pixels, grid, mode="bilinear", padding_mode="border", align_corners=False
    )

    def luma(t: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(_GRAY, device=t.device, dtype=t.dtype).view(1, 3, 1, 1)
        return (t * weights).sum(1, keepdim=True)

    x = (x * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    level = luma(x).mean((2, 3), keepdim=True)
    x = ((x - level) * contrast.view(-1, 1, 1, 1) + level).clamp(0, 1)
    x = ((x - luma(x)) * saturation.view(-1, 1, 1, 1) + luma(x)).clamp(0, 1)
    x = torch.where(gray.view(-1, 1, 1, 1) > 0, luma(x).expand_as(x), x)
    return (x - mean_t) / std_t
