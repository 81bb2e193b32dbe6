"""Visual Prompt Tuning (Jia et al. 2022, §3.2): learned prompt tokens inserted after the class token of
the image tower's sequence. VPT-shallow: prompts enter the first block only and travel on; VPT-deep: each
block gets its own prompts in place of the previous block's prompt outputs. Prompt outputs are dropped
before pooling, so the readout is the one the tower was trained with."""

from __future__ import annotations

import math

import torch
from torch import nn

from vlmforge.config.peft import Vpt
from vlmforge.errors import UserError
from vlmforge.models.peft.classifier import ClipClassifier, freeze


class VptClassifier(ClipClassifier):
    """Frozen CLIP; only ``visual_prompts`` ([layers or 1, tokens, width]) train."""

    def __init__(self, clip: nn.Module, prompt_tokens: torch.Tensor, templates: int, cfg: Vpt) -> None:
        super().__init__(clip, prompt_tokens, templates)
        freeze(clip)
        check_vision_tower(clip.visual)
        visual = clip.visual
        width = visual.conv1.out_channels
        patch = visual.conv1.kernel_size[0]
        layers = len(visual.transformer.resblocks) if cfg.deep else 1
        # VPT's initialisation: uniform in +-sqrt(6 / (3 * patch^2 + width)) (Xavier over the patch embedding)
        bound = math.sqrt(6.0 / (3 * patch * patch + width))
        self.visual_prompts = nn.Parameter(
            torch.empty(layers, cfg.prompt_tokens, width).uniform_(-bound, bound)
        )
        self.prompt_dropout = nn.Dropout(cfg.dropout)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip.visual
        x = visual._embeds(images)  # patch + class embeddings, positions, ln_pre
        count = self.visual_prompts.shape[1]
        blocks = visual.transformer.resblocks
        for depth, block in enumerate(blocks):
            if depth < self.visual_prompts.shape[0]:
                prompts = self.prompt_dropout(self.visual_prompts[depth]).expand(x.shape[0], -1, -1)
                kept = x[:, 1:] if depth == 0 else x[:, 1 + count :]
                x = torch.cat([x[:, :1], prompts.to(x.dtype), kept], dim=1)
            x = block(x, attn_mask=None)
        x = torch.cat([x[:, :1], x[:, 1 + count :]], dim=1)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled


def check_vision_tower(visual: nn.Module) -> None:
    """VPT runs the blocks of an open_clip VisionTransformer itself (batch-first, no attention pooler)."""
    transformer = getattr(visual, "transformer", None)
    usable = (
        hasattr(visual, "_embeds")
        and getattr(transformer, "batch_first", False)
        and getattr(visual, "attn_pool", None) is None
    )
    if not usable:
        raise UserError(
            "method vpt needs an open_clip ViT image tower without an attention pooler",
            hint="start from a vlmforge clip run or an open_clip ViT export",
        )
