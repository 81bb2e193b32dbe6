"""LightningModule of `vlmforge align` with ``method: reward_model``: the finetuned LLaVA with a scalar
head (``RewardModel``), trained on the preference pairs with the Bradley-Terry loss. What trains is the
recipe's ``trainable`` (LoRA adapters by default) and always the head."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from vlmforge.config.schema import AlignRecipe
from vlmforge.data.preferences import collate_preferences
from vlmforge.models.llava import load_saved_weights, prepare_stage
from vlmforge.models.reward import RewardModel
from vlmforge.rlhf_losses import bradley_terry_loss
from vlmforge.training.llava import LlavaStageModule
from vlmforge.training.module import FitSettings, TrainingModule


class RewardModule(TrainingModule):
    """``recipe.model`` is the finetune run's model section (``vlmforge.verbs.align`` fills it in)."""

    block_classes = LlavaStageModule.block_classes
    enable_activation_checkpointing = LlavaStageModule.enable_activation_checkpointing

    def __init__(
        self,
        recipe: AlignRecipe,
        vocab_size: int,
        settings: FitSettings,
        tokens: tuple[int, int],  # (<image> id, <pad> id) of the finetune run's tokenizer
        init_weights: Path,
        eos_id: int,
    ) -> None:
        super().__init__(recipe, vocab_size, settings=settings)
        assert recipe.model is not None
        image_id, pad_id = tokens
        self.model.config.image_token_index = image_id
        load_saved_weights(self.model, init_weights)
        cfg = recipe.model.model_copy(update={"lora": recipe.lora})
        self.model = RewardModel(prepare_stage(self.model, cfg, recipe.trainable), eos_id)
        self.collate = functools.partial(collate_preferences, pad_id=pad_id)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pairs = batch["index"].shape[0]  # rows: the chosen answers, then the rejected ones
        scores = self.model(batch)
        return bradley_terry_loss(scores[:pairs], scores[pairs:])
