"""X-VLM's box head for contrastive models (Zeng et al. 2022, "Multi-Grained Vision Language
Pre-Training", §3.4.1): the caption's embedding, as one query, attends to the image tower's patch tokens,
and an MLP reads the box of the object the caption names as sigmoid (cx, cy, w, h)."""

from __future__ import annotations

import torch
from torch import nn

from vlmforge.config.models import BoxHeadConfig


class BoxHead(nn.Module):
    """Text embedding [B, embed_dim] + patch tokens [B, N, width] -> boxes [B, 4] as sigmoid cx, cy, w, h."""

    def __init__(self, cfg: BoxHeadConfig, embed_dim: int, width: int) -> None:
        super().__init__()
        # the unit-norm text embedding, LayerNormed to unit variance: a query that small would spread its
        # attention evenly over the patches, and read only the mean box
        self.query = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.attention = nn.MultiheadAttention(width, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, 4))

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        query = self.query(text).unsqueeze(1)
        attended, _ = self.attention(query, tokens, tokens, need_weights=False)
        return self.mlp(self.norm(attended.squeeze(1))).sigmoid()


def token_width(model: nn.Module) -> int:
    """Width of the patch tokens open_clip's ViT image tower returns (``output_tokens``)."""
    return int(model.visual.transformer.width)


def encode_with_tokens(model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised image embedding [B, embed_dim], patch tokens [B, N, width]) in one pass of the tower;
    ``output_tokens`` is set only for this pass, so ``encode_image`` keeps returning the embedding alone."""
    visual = model.visual
    visual.output_tokens = True
    try:
        pooled, tokens = visual(image)
    finally:
        visual.output_tokens = False
    return nn.functional.normalize(pooled, dim=-1), tokens


def to_xyxy(centred: torch.Tensor) -> torch.Tensor:
    """The head's (cx, cy, w, h) as (x1, y1, x2, y2), torchvision's conversion."""
    from torchvision.ops import box_convert

    return box_convert(centred, "cxcywh", "xyxy")


@torch.no_grad()
def predict_boxes(model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Boxes [B, 4] (normalised x1, y1, x2, y2) the box head names for each image-caption pair."""
    _, tokens = encode_with_tokens(model, image)
    return to_xyxy(model.box_head(tokens, model.encode_text(text, normalize=True)))
