"""Losses as small functions returning named terms; ``loss`` is the total that is optimised."""

from __future__ import annotations

import torch


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, objective: object
) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over the (gathered) batch (Radford et al. 2021, eq. in Fig. 3).

    ``objective`` is an ``open_clip.ClipLoss`` configured for this rank (local loss, gather-with-grad).
    """
    contrastive = objective(image_features, text_features, logit_scale)  # type: ignore[operator]
    return {"loss": contrastive, "contrastive": contrastive}


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    objective: object,
) -> dict[str, torch.Tensor]:
    """Pairwise sigmoid loss, -sum log sigmoid(z_ij (t x_i.y_j + b)) / batch (Zhai et al. 2023, Alg. 1).

    ``objective`` is an ``open_clip.SigLipLoss`` for this rank (exchanges text features across ranks).
    """
    sigmoid = objective(image_features, text_features, logit_scale, logit_bias)  # type: ignore[operator]
    return {"loss": sigmoid, "sigmoid": sigmoid}
