"""LightningModule for the masked family: MAE-style MIM, BERT-style MLM and the FLAVA-like joint objective."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.schema import FlavaModel
from vlmforge.models.masked import objective_terms
from vlmforge.training.contrastive import MAX_LOGIT_SCALE
from vlmforge.training.module import TrainingModule


class MaskedModule(TrainingModule):
    """Trains a ``MaskedVLM`` on the weighted sum of the recipe's objectives; each term is logged."""

    def setup(self, stage: str) -> None:
        """The contrastive loss for this rank (open_clip's ``ClipLoss``, gathering features across ranks)."""
        from open_clip.loss import ClipLoss

        cfg = self.recipe.model
        self.objective = None
        if isinstance(cfg, FlavaModel):
            self.objective = ClipLoss(
                local_loss=cfg.contrastive.local_loss,
                gather_with_grad=cfg.contrastive.gather_with_grad,
                cache_labels=True,
                rank=self.global_rank,
                world_size=self.trainer.world_size,
            )

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        terms = objective_terms(self.model, self.recipe.model, batch["image"], batch["text"], self.objective)
        if self.model.logit_scale is not None:
            terms["logit_scale"] = self.model.logit_scale.detach().exp()
        return terms

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.model.logit_scale is not None:
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
