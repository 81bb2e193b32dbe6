"""LightningModule for one LLaVA finetuning stage: next-token loss on the answers, only the stage's
parameters trainable (projector, projector + LLM, or LoRA adapters)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from vlmforge.config.schema import FinetuneRecipe, FinetuneStage
from vlmforge.data.conversations import IGNORE_INDEX, collate_conversations
from vlmforge.data.in_context import collate_in_context, is_in_context
from vlmforge.models.llava import load_saved_weights, prepare_stage
from vlmforge.models.llava_anyres import vision_inputs
from vlmforge.models.llava_qlora import quantize_llm, quantizes
from vlmforge.training.module import FitSettings, TrainingModule


class LlavaStageModule(TrainingModule):
    """Starts from ``init_weights`` (the previous stage's plain model) when given, then freezes what the
    stage does not train; the shared base owns data order, optimizer, schedule and checkpoints."""

    def __init__(
        self,
        recipe: FinetuneRecipe,
        vocab_size: int,
        stage: FinetuneStage,
        settings: FitSettings,
        tokens: tuple[int, int],  # (<image> id, <pad> id) of the run's tokenizer
        init_weights: Path | None = None,
    ) -> None:
        super().__init__(recipe, vocab_size, settings=settings)
        image_id, pad_id = tokens
        self.model.config.image_token_index = image_id  # where image features are scattered
        if init_weights is not None:
            load_saved_weights(self.model, init_weights)
        self.model = prepare_stage(self.model, recipe.model, stage.trainable)
        if quantizes(recipe.model):  # the 4-bit LLM is frozen in every stage the recipe allows
            quantize_llm(self.model)
        self.stage = stage
        multi_image = is_in_context(stage.data)  # several images per sample, stacked in order
        collate = collate_in_context if multi_image else collate_conversations
        self.collate = functools.partial(collate, pad_id=pad_id)

    def block_classes(self) -> tuple[type[torch.nn.Module], ...]:
        """FSDP shards the vision encoder's and the LLM's layers one by one."""
        from transformers.models.clip.modeling_clip import CLIPEncoderLayer
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        return (CLIPEncoderLayer, LlamaDecoderLayer)

    def enable_activation_checkpointing(self) -> None:
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            **vision_inputs(self.model, batch["pixel_values"]),
        )
        answer_tokens = (batch["labels"] != IGNORE_INDEX).sum().float()
        return {"loss": out.loss, "answer_tokens": answer_tokens}
