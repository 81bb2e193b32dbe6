"""LightningModule for generative pretraining: CoCa (contrastive + captioning, Yu et al. 2022)."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.losses import coca_loss
from vlmforge.training.contrastive import MAX_LOGIT_SCALE
from vlmforge.training.module import TrainingModule


class CoCaModule(TrainingModule):
    """Trains an open_clip CoCa: InfoNCE between the pooled embeddings plus teacher-forced captioning."""

    def setup(self, stage: str) -> None:
        """The loss module for this rank (open_clip's, which gathers features across ranks)."""
        from open_clip.loss import CoCaLoss

        cfg = self.recipe.model
        self.objective = CoCaLoss(
            caption_loss_weight=1.0,
            clip_loss_weight=1.0,
            pad_id=self.model.pad_id,
            local_loss=cfg.local_loss,
            gather_with_grad=cfg.gather_with_grad,
            cache_labels=True,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """open_clip's CoCa outputs: features, decoder logits, labels (the caption shifted by one), scale."""
        return self.model(image, text)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.recipe.model
        out = self(batch["image"], batch["text"])
        terms = coca_loss(
            out["image_features"],
            out["text_features"],
            out["logits"],
            out["labels"],
            out["logit_scale"],
            self.objective,
            cfg.contrastive_weight,
            cfg.caption_weight,
        )
        terms["logit_scale"] = out["logit_scale"].detach()
        return terms

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
