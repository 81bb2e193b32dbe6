"""LightningModule for `vlmforge align`: DPO / IPO on preference pairs, starting from a finetuned LLaVA.

The policy trains what the recipe names (LoRA adapters, projector + LLM, or projector + adapters); the
reference is the starting model, frozen:

* ``trainable: lora`` — the policy is the frozen finetuned weights plus adapters whose second factor
  starts at zero, so the same model with its adapters switched off (peft's ``disable_adapter()``) *is*
  the starting model: no copy, no extra memory.
* otherwise the trained weights themselves move, so a frozen copy is taken before training. It is kept
  out of the module's children (a plain attribute, not a submodule) so that the optimizer, the sharding
  strategy and checkpoints never see it: a resumed run rebuilds it from the finetune run's weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from vlmforge.config.schema import AlignRecipe
from vlmforge.data.preferences import collate_preferences
from vlmforge.losses import chosen_nll, preference_loss
from vlmforge.models.llava import frozen_copy, load_saved_weights, prepare_stage, sequence_logps
from vlmforge.training.llava import LlavaStageModule
from vlmforge.training.module import FitSettings, TrainingModule


class FinetunedLlavaModule(TrainingModule):
    """A module whose model starts from a finished finetune run's weights; ``recipe.model`` is that run's
    model section (``vlmforge.verbs.align`` fills it in). Subclasses prepare what trains."""

    block_classes = LlavaStageModule.block_classes
    enable_activation_checkpointing = LlavaStageModule.enable_activation_checkpointing

    def __init__(
        self,
        recipe: AlignRecipe,
        vocab_size: int,
        settings: FitSettings,
        tokens: tuple[int, int],  # (<image> id, <pad> id) of the finetune run's tokenizer
        init_weights: Path,
    ) -> None:
        super().__init__(recipe, vocab_size, settings=settings)
        assert recipe.model is not None
        image_id, pad_id = tokens
        self.model.config.image_token_index = image_id
        load_saved_weights(self.model, init_weights)
        self.stage_model = recipe.model.model_copy(update={"lora": recipe.lora})  # what prepare_stage reads
        self.collate = functools.partial(collate_preferences, pad_id=pad_id)


class AlignModule(FinetunedLlavaModule):
    """DPO / IPO: the policy trains ``recipe.trainable``; the reference is the starting model (above)."""

    def __init__(
        self,
        recipe: AlignRecipe,
        vocab_size: int,
        settings: FitSettings,
        tokens: tuple[int, int],
        init_weights: Path,
    ) -> None:
        super().__init__(recipe, vocab_size, settings, tokens, init_weights)
        self.frozen_reference = () if recipe.trainable == "lora" else (frozen_copy(self.model),)
        self.model = prepare_stage(self.model, self.stage_model, recipe.trainable)
        self.dpo = recipe.dpo

    def on_fit_start(self) -> None:
        for reference in self.frozen_reference:
            reference.to(self.device)

    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            if self.frozen_reference:
                return sequence_logps(self.frozen_reference[0], batch)
            with self.model.disable_adapter():
                return sequence_logps(self.model, batch)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pairs = batch["index"].shape[0]  # rows: the chosen answers, then the rejected ones
        policy, reference = sequence_logps(self.model, batch), self.reference_logps(batch)
        terms = preference_loss(
            policy[:pairs],
            policy[pairs:],
            reference[:pairs],
            reference[pairs:],
            self.dpo.beta,
            self.dpo.loss,
            self.dpo.label_smoothing,
        )
        if self.dpo.nll_weight > 0:
            nll = chosen_nll(policy[:pairs], batch["labels"][:pairs])
            terms["loss"] = terms["loss"] + self.dpo.nll_weight * nll
            terms["chosen_nll"] = nll.detach()
        return terms
