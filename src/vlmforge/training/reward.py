"""LightningModule of `vlmforge align` with ``method: reward_model``: the finetuned LLaVA with a scalar
head (``RewardModel``), trained on the preference pairs with the Bradley-Terry loss. What trains is the
recipe's ``trainable`` (LoRA adapters by default) and always the head."""

from __future__ import annotations

from pathlib import Path

import torch

from vlmforge.config.schema import AlignRecipe
from vlmforge.models.llava import prepare_stage
from vlmforge.models.reward import RewardModel
from vlmforge.rlhf_losses import bradley_terry_loss
from vlmforge.training.align import FinetunedLlavaModule
from vlmforge.training.module import FitSettings


class RewardModule(FinetunedLlavaModule):
    """The finetune run's model with a scalar head; what trains is ``recipe.trainable`` and the head."""

    def __init__(
        self,
        recipe: AlignRecipe,
        vocab_size: int,
        settings: FitSettings,
        tokens: tuple[int, int],
        init_weights: Path,
        eos_id: int,
    ) -> None:
        super().__init__(recipe, vocab_size, settings, tokens, init_weights)
        self.model = RewardModel(prepare_stage(self.model, self.stage_model, recipe.trainable), eos_id)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pairs = batch["index"].shape[0]  # rows: the chosen answers, then the rejected ones
        scores = self.model(batch)
        return bradley_terry_loss(scores[:pairs], scores[pairs:])
