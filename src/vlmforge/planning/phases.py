"""What a recipe trains, phase by phase, counted on its real model on the meta device.

A pretrain recipe is one phase; a finetune recipe one per stage, with that stage's frozen parts and
adapters (frozen parameters get no weight gradients and no optimizer states) and its sequence length
(image tokens + the stage data's mean text tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlmforge.config.schema import (
    BpeTokenizer,
    FinetuneRecipe,
    FinetuneStage,
    LlavaModel,
    TrainingRecipe,
    WordTokenizer,
)
from vlmforge.errors import UserError
from vlmforge.planning.memory import SavedBytes


@dataclass(frozen=True)
class Phase:
    """One training run the planner costs: a pretrain recipe is one, a finetune recipe one per stage."""

    name: str
    build: Callable[[str], Any]  # device -> the model with this phase's frozen parts and adapters
    probe: Callable[[Any, int], Any]  # (model, batch size) -> scalar loss of one training forward
    batch_size: int  # global batch
    micro_batch: int  # the recipe's per-device micro-batch
    steps: int


@dataclass
class PhaseCost:
    """A phase counted on its real model (meta device): compute, parameters and activation memory."""

    name: str
    flops_per_sample: float
    samples: int
    total_flops: float
    trainable_params: int
    frozen_params: int
    activation_bytes_per_sample: int
    batch_size: int


def probe_vocab_size(recipe: TrainingRecipe) -> int:
    """Vocabulary of the model planned before any data is read: word vocabularies are small."""
    model = recipe.model
    if isinstance(model, LlavaModel):
        size = model.tokenizer.vocab_size if isinstance(model.tokenizer, BpeTokenizer) else 1000
        return model.llm.vocab_size or size
    return 1000 if isinstance(model.tokenizer, WordTokenizer) else 49408


def phases(recipe: TrainingRecipe) -> list[Phase]:
    """What the recipe trains, phase by phase, as models the planner can build on any device."""
    from vlmforge.families import family_for

    vocab = probe_vocab_size(recipe)
    if isinstance(recipe, FinetuneRecipe):
        return [_stage_phase(recipe, stage, vocab) for stage in recipe.stages]
    cfg = recipe.model.model_copy(update={"pretrained": None})
    models = family_for(cfg).models
    return [
        Phase(
            recipe.name,
            lambda device: models.build_model(cfg, vocab, device=device),
            lambda model, batch: models.probe_loss(cfg, model, batch, _device_of(model), vocab),
            recipe.data.batch_size,
            recipe.micro_batch_size,
            recipe.train.max_steps,
        )
    ]


def _stage_phase(recipe: FinetuneRecipe, stage: FinetuneStage, vocab: int) -> Phase:
    from vlmforge.models import llava

    model = recipe.model
    cfg = model.model_copy(
        update={
            "vision": model.vision.model_copy(update={"pretrained": None}),
            "llm": model.llm.model_copy(update={"pretrained": None}),
        }
    )
    text = stage.data.mean_text_tokens or cfg.max_text_tokens
    steps = stage.max_steps or stage.steps_for(_stage_train_samples(stage, cfg.vision.image_size))
    return Phase(
        stage.name,
        lambda device: llava.prepare_stage(
            llava.build_model(cfg, vocab, device=device), cfg, stage.trainable
        ),
        lambda m, batch: llava.probe_loss(cfg, m, batch, _device_of(m), vocab, text_tokens=text),
        stage.batch_size,
        recipe.micro_batch_size(stage),
        steps,
    )


def _stage_train_samples(stage: FinetuneStage, image_size: int) -> int:
    """Training conversations of an epoch-based stage: ``data.num_samples`` less the held-out part, or
    counted in the data when it is on this machine."""
    from vlmforge.data.conversations import split_conversations

    data = stage.data
    if data.num_samples is not None:
        return data.num_samples - math.ceil(data.num_samples * data.val_fraction)
    if getattr(data, "path", None) is not None and not data.path.exists():  # type: ignore[union-attr]
        raise UserError(
            f"stage {stage.name!r}: cannot plan {stage.epochs} epoch(s): {data.path} is not on this machine",  # type: ignore[union-attr]
            hint="set the stage's data.num_samples, or max_steps",
        )
    return len(split_conversations(data, image_size)[0])


def _device_of(model: Any) -> str:
    return next(model.parameters()).device.type


def phase_cost(phase: Phase) -> PhaseCost:
    """Count a phase on the meta device from one training step of one sample: FLOPs forward and
    backward (``FlopCounterMode``) and the activations autograd saves (``SavedBytes``)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = phase.build("meta")
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    with FlopCounterMode(display=False) as forward, SavedBytes() as saved:
        loss = phase.probe(model, 1)
    flops = forward.get_total_flops()
    if loss.requires_grad:
        with FlopCounterMode(display=False) as backward:
            loss.backward()
        flops += backward.get_total_flops()
    samples = phase.steps * phase.batch_size
    return PhaseCost(
        phase.name,
        float(flops),
        samples,
        float(flops) * samples,
        trainable,
        frozen,
        saved.bytes,
        phase.batch_size,
    )


def recipe_model_costs(recipe: TrainingRecipe) -> list[PhaseCost]:
    """Every phase of the recipe, counted."""
    return [phase_cost(phase) for phase in phases(recipe)]
