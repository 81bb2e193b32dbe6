"""LightningModule for contrastive pretraining: CLIP (InfoNCE), SigLIP (sigmoid), FLIP (patch masking)."""

from __future__ import annotations

import math
from typing import Any

import torch

from vlmforge.config.schema import SigLipModel
from vlmforge.losses import clip_loss, siglip_loss
from vlmforge.training.module import PretrainModule
from vlmforge.training.sharding import clamp_parameter_

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature so logits stay <= 100


class ContrastiveModule(PretrainModule):
    """Trains an open_clip CLIP with the InfoNCE (CLIP) or sigmoid (SigLIP) loss."""

    def setup(self, stage: str) -> None:
        """The loss module for this rank (open_clip's, which gathers features across ranks)."""
        from open_clip.loss import ClipLoss, SigLipLoss

        cfg = self.recipe.model
        if isinstance(cfg, SigLipModel):
            self.objective = SigLipLoss(
                cache_labels=True, rank=self.global_rank, world_size=self.trainer.world_size
            )
            return
        self.objective = ClipLoss(
            local_loss=cfg.local_loss,
            gather_with_grad=cfg.gather_with_grad,
            cache_labels=True,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(image features, text features, logit scale[, logit bias]) as open_clip returns them."""
        return self.model(image, text)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_features, text_features, logit_scale, *bias = self(batch["image"], batch["text"])
        if bias:
            terms = siglip_loss(image_features, text_features, logit_scale, bias[0], self.objective)
            terms["logit_bias"] = bias[0].detach().reshape(())
        else:
            terms = clip_loss(image_features, text_features, logit_scale, self.objective)
        terms["logit_scale"] = logit_scale.detach()
        return terms

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # FLIP: the last `unmasked_tuning_steps` optimizer steps see every patch. Derived from the step,
        # so a resumed run switches at the same point.
        tuning = self.recipe.model.unmasked_tuning_steps
        if tuning and self.trainer.global_step >= self.recipe.train.max_steps - tuning:
            patch_dropout = getattr(self.model.visual, "patch_dropout", None)
            if patch_dropout is not None and getattr(patch_dropout, "prob", 0.0):
                patch_dropout.prob = 0.0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        clamp_parameter_(self.model.logit_scale, 0, MAX_LOGIT_SCALE)  # also DeepSpeed's fp32 copy
