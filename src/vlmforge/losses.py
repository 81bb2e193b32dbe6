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


def coca_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    objective: object,
    contrastive_weight: float,
    caption_weight: float,
) -> dict[str, torch.Tensor]:
    """lambda_con * InfoNCE + lambda_cap * next-token cross-entropy of the caption given the image, padding
    ignored (CoCa, Yu et al. 2022, §3.2).

    ``objective`` is an ``open_clip.CoCaLoss`` with unit weights for this rank; the recipe's weights are
    applied here so that both terms are logged unweighted.
    """
    contrastive, caption = objective(  # type: ignore[operator]
        image_features, text_features, logits, labels, logit_scale
    )
    total = contrastive_weight * contrastive + caption_weight * caption
    return {"loss": total, "contrastive": contrastive, "caption": caption}
