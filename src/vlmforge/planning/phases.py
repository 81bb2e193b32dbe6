"""What a recipe trains, phase by phase, counted on its real model on the meta device.

A pretrain recipe is one phase; a finetune recipe one per stage, with that stage's frozen parts and
adapters (frozen parameters get no weight gradients and no optimizer states) and its sequence length
(image tokens + the stage data's mean text tokens); an align recipe one phase whose sample is a preference
pair: the policy's forward and backward on both answers plus the reference's forward on both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlmforge.config.schema import (
    AlignRecipe,
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


def planned_model(recipe: TrainingRecipe) -> Any:
    """The recipe's model section; an align recipe's may come from the finetune run it starts from."""
    if isinstance(recipe, AlignRecipe):
        from vlmforge.align import planned_model as align_model

        return align_model(recipe)
    return recipe.model


def probe_vocab_size(recipe: TrainingRecipe) -> int:
    """Vocabulary of the model planned before any data is read: word vocabularies are small."""
    model = planned_model(recipe)
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
    if isinstance(recipe, AlignRecipe):
        return [_align_phase(recipe, vocab)]
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
    from vlmforge.data.conversations import split_conversations
    from vlmforge.models import llava

    cfg = recipe.model.without_pretrained()
    text = stage.data.mean_text_tokens or cfg.max_text_tokens
    steps = stage.max_steps or stage.steps_for(
        _train_samples(
            stage.data, f"stage {stage.name!r}", stage.epochs, cfg.vision.image_size, split_conversations
        )
    )
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


def _align_phase(recipe: AlignRecipe, vocab: int) -> Phase:
    """The policy trains what the recipe names; the reference is the policy with its adapters switched
    off (LoRA) or a frozen copy, which the planner counts as frozen parameters."""
    import torch

    from vlmforge.data.preferences import split_preferences
    from vlmforge.models import llava

    cfg = planned_model(recipe).without_pretrained().model_copy(update={"lora": recipe.lora})
    text = recipe.data.mean_text_tokens or cfg.max_text_tokens
    steps = recipe.max_steps or recipe.steps_for(
        _train_samples(recipe.data, "align", recipe.epochs, cfg.vision.image_size, split_preferences)
    )

    def build(device: str) -> torch.nn.Module:
        policy = llava.build_model(cfg, vocab, device=device)
        if recipe.trainable == "lora":
            return llava.prepare_stage(policy, cfg, "lora")
        reference = llava.frozen_copy(policy)
        return torch.nn.ModuleDict(
            {"policy": llava.prepare_stage(policy, cfg, recipe.trainable), "reference": reference}
        )

    return Phase(
        recipe.name,
        build,
        lambda m, batch: llava.preference_probe_loss(cfg, m, batch, _device_of(m), vocab, text_tokens=text),
        recipe.batch_size,
        recipe.micro_batch_size,
        steps,
    )


def _train_samples(data: Any, where: str, epochs: int | None, image_size: int, split: Callable) -> int:
    """Training samples of an epoch-based phase: ``data.num_samples`` less the held-out part, or counted
    in the data (``split(data, image_size)``'s training part) when it is on this machine."""
    if data.num_samples is not None:
        return data.num_samples - math.ceil(data.num_samples * data.val_fraction)
    if getattr(data, "path", None) is not None and not data.path.exists():
        raise UserError(
            f"{where}: cannot plan {epochs} epoch(s): {data.path} is not on this machine",
            hint="set data.num_samples, or max_steps",
        )
    return len(split(data, image_size)[0])


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
