"""Masking and the masked-modeling losses as pure functions on tensors (they also run on the meta device,
so the planner counts exactly what training runs)."""

from __future__ import annotations

import torch

IGNORE = -100  # label of positions that carry no MLM loss (torch's cross-entropy ignore_index)
PAD_ID = 0  # open_clip and the word vocabulary pad with 0


def random_patch_mask(
    batch: int, patches: int, ratio: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample uniform random masking (MAE, He et al. 2022 §3): ``int(patches * (1 - ratio))`` patches
    stay visible. Returns (visible patch indices [B, K] in raster order, mask [B, L] with True = masked)."""
    keep = max(1, int(patches * (1 - ratio)))
    noise = torch.rand(batch, patches, device=device)
    visible = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    mask = torch.ones(batch, patches, dtype=torch.bool, device=device)
    mask.scatter_(1, visible, False)
    return visible, mask


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C], patches in the raster order of a ViT's patch embedding."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def mim_loss(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool
) -> torch.Tensor:
    """Mean squared error over the masked patches only (MAE, He et al. 2022 §3 "Reconstruction target").

    ``predicted``/``target`` [B, L, P] pixels per patch; ``mask`` [B, L], True = masked. ``norm_pix``
    normalises each target patch by its own mean and variance (MAE's ``norm_pix_loss``)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = (predicted - target).pow(2).mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp(min=1)


def mlm_candidates(tokens: torch.Tensor, end_id: int) -> torch.Tensor:
    """Positions MLM may choose: real words, not padding, the start token (first) or the end token."""
    candidates = (tokens != PAD_ID) & (tokens != end_id)
    candidates[:, 0] = False
    return candidates


def mlm_corrupt(
    tokens: torch.Tensor,
    candidates: torch.Tensor,
    mask_id: int,
    random_ids: tuple[int, int],
    ratio: float = 0.15,
    replace: tuple[float, float] = (0.8, 0.1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption (Devlin et al. 2019 §3.1): each candidate token is chosen with probability
    ``ratio``; a chosen token becomes ``mask_id`` 80% of the time, a uniform random id in
    ``[random_ids[0], random_ids[1])`` 10%, and stays itself 10%. Returns (inputs, labels): labels hold
    the original id at chosen positions and ``IGNORE`` elsewhere."""
    draw = torch.rand(tokens.shape, device=tokens.device)
    chosen = candidates & (draw < ratio)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    how = torch.rand(tokens.shape, device=tokens.device)
    masked = chosen & (how < replace[0])
    randomised = chosen & (how >= replace[0]) & (how < replace[0] + replace[1])
    random_tokens = torch.randint(*random_ids, tokens.shape, device=tokens.device)
    inputs = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(randomised, random_tokens, inputs)
    return inputs, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the chosen positions only (BERT's masked-LM loss); 0 when none was chosen.

    ``logits`` [B, T, V], ``labels`` [B, T] with ``IGNORE`` at positions without loss."""
    total = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return total / (labels != IGNORE).sum().clamp(min=1)
