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

from vlmforge.config.peft import ContrastiveFinetuneRecipe, TrainedMethod
from vlmforge.config.schema import (
    AlignRecipe,
    BatchPlan,
    BpeTokenizer,
    ClipModel,
    FinetuneRecipe,
    FinetuneStage,
    LlavaModel,
    TrainingRecipe,
    WordTokenizer,
)
from vlmforge.errors import UserError
from vlmforge.families import family_for
from vlmforge.planning.flops import count_step


@dataclass(frozen=True)
class Phase:
    """One training run the planner costs: a pretrain recipe is one, a finetune recipe one per stage."""

    name: str
    build: Callable[[str], Any]  # device -> the model with this phase's frozen parts and adapters
    loss: Callable[[Any, int], Any]  # (model, batch size) -> scalar loss of one training forward
    batch: BatchPlan  # as the verb will train it
    quantized: Callable[[Any], int] | None = None  # model -> frozen weights held in 4-bit (QLoRA)
    replicated: bool = False  # every device needs the whole model (RLOO samples with it): no sharding


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
    global_batch: int
    micro_batch: int  # per device, as the recipe trains it
    quantized_params: int = 0  # of the frozen ones, held in 4-bit NF4 (QLoRA)
    replicated: bool = False  # only data-parallel layouts apply


def planned_model(recipe: TrainingRecipe) -> Any:
    """The recipe's model section. An align recipe may leave it out (it is its from_run's): the verbs
    fill it in from the run before planning (``vlmforge.runs.artifacts.with_planned_model``)."""
    if recipe.model is None:
        raise UserError(
            "align recipe without a model section: it is read from from_run, which was not resolved",
            hint="add the finetune run's model section to the recipe",
        )
    return recipe.model


def family_of(recipe: TrainingRecipe) -> str:
    """The published-runs family whose utilisation applies: masked patches make CLIP a FLIP ('masked')."""
    model = planned_model(recipe)
    if isinstance(model, ClipModel) and model.patch_dropout > 0:
        return "masked"
    return family_for(model).name


def planned_vocab_size(recipe: TrainingRecipe) -> int:
    """Vocabulary of the model planned before any data is read: word vocabularies are small."""
    model = planned_model(recipe)
    if isinstance(model, LlavaModel):
        size = model.tokenizer.vocab_size if isinstance(model.tokenizer, BpeTokenizer) else 1000
        return model.llm.vocab_size or size + _location_tokens(recipe)
    return 1000 if isinstance(model.tokenizer, WordTokenizer) else 49408


def _location_tokens(recipe: TrainingRecipe) -> int:
    """Kosmos-2 location tokens the recipe's referring data adds to the vocabulary."""
    from vlmforge.data.locations import added_vocabulary

    stages = recipe.stages if isinstance(recipe, FinetuneRecipe) else []
    return added_vocabulary(stage.data for stage in stages)


def phases(recipe: TrainingRecipe) -> list[Phase]:
    """What the recipe trains, phase by phase, as models the planner can build on any device."""
    vocab = planned_vocab_size(recipe)
    if isinstance(recipe, ContrastiveFinetuneRecipe):
        return [_classifier_phase(recipe, vocab)]
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
            lambda model, batch: models.synthetic_loss(cfg, model, batch, _device_of(model), vocab),
            recipe.batch_plan(),
        )
    ]


def _stage_phase(recipe: FinetuneRecipe, stage: FinetuneStage, vocab: int) -> Phase:
    from vlmforge.data.in_context import split_stage_data
    from vlmforge.models import llava, llava_qlora, llava_synthetic

    cfg = recipe.model.without_pretrained()
    text = stage.data.mean_text_tokens or cfg.max_text_tokens
    images = getattr(stage.data, "images_per_sample", 1)  # in-context samples hold several
    samples = None
    if stage.max_steps is None:
        where = f"stage {stage.name!r}"
        samples = _train_samples(stage.data, where, stage.epochs, cfg.input_side, split_stage_data)
    return Phase(
        stage.name,
        lambda device: llava.prepare_stage(
            llava.build_model(cfg, vocab, device=device), cfg, stage.trainable
        ),
        lambda m, batch: llava_synthetic.synthetic_loss(
            cfg, m, batch, _device_of(m), vocab, text_tokens=text, images=images
        ),
        recipe.batch_plan(stage, samples),
        lambda m: llava_qlora.quantized_weight_count(m, cfg),
    )


def _classifier_phase(recipe: ContrastiveFinetuneRecipe, vocab: int) -> Phase:
    """One planned sample is one optimizer step: a batch of images and, when the text side trains, every
    class prompt through the text tower (CoOp's cost grows with the classes, not the images)."""
    import torch

    from vlmforge.models.peft.build import method_classifier, zero_shot_classifier

    cfg = planned_model(recipe).model_copy(update={"pretrained": None})
    models = family_for(cfg).models
    try:
        names = [f"class {i}" for i in range(recipe.planned_classes)]
        steps = recipe.planned_steps()
    except ValueError as exc:
        raise UserError(str(exc), hint="plan needs the class count and the training length") from None
    templates = recipe.data.templates or ["{}"]
    method = recipe.method

    def build(device: str) -> torch.nn.Module:
        clip = models.build_model(cfg, vocab, device=device)
        context = models.context_length(cfg, clip)
        tokenizer = _placeholder_tokenizer(vocab)
        if isinstance(method, TrainedMethod):
            classifier = method_classifier(method, clip, tokenizer, names, templates, context, recipe.seed)
            return classifier.to(device)
        return zero_shot_classifier(clip, tokenizer, names, templates, context)

    def loss(model: torch.nn.Module, batch_steps: int) -> torch.Tensor:
        side = models.image_size(cfg, model.clip)
        device = _device_of(model)
        images = torch.zeros(batch_steps * recipe.data.batch_size, 3, side, side, device=device)
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=device)
        return torch.nn.functional.cross_entropy(model(images), labels)

    return Phase(recipe.name, build, loss, BatchPlan.of(1, None, 1, steps, None, None, ""))


def _placeholder_tokenizer(vocab: int) -> Callable[[list[str], int], Any]:
    """Token ids shaped as a real tokenizer's (start, one id per word, end = the highest id) for counting."""
    import torch

    def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = min(len(text.split()), context_length - 2)
            out[row, 0], out[row, 1 : 1 + words], out[row, 1 + words] = 1, 2, vocab - 1
        return out

    return tokenize


def _align_phase(recipe: AlignRecipe, vocab: int) -> Phase:
    """The policy trains what the recipe names; the reference is the policy with its adapters switched
    off (LoRA) or a frozen copy, which the planner counts as frozen parameters. A reward model has no
    reference; an RLOO step scores k answers per prompt with the policy, the reference and a frozen
    reward model (counted as a copy of the policy's architecture)."""
    import torch

    from vlmforge.data.preferences import split_preferences
    from vlmforge.models import llava, llava_synthetic

    cfg = planned_model(recipe).without_pretrained().model_copy(update={"lora": recipe.lora})
    text = recipe.data.mean_text_tokens or cfg.max_text_tokens
    samples = None
    if recipe.max_steps is None:
        samples = _train_samples(
            recipe.data, "align", recipe.epochs, cfg.vision.image_size, split_preferences
        )

    def build(device: str) -> torch.nn.Module:
        policy = llava.build_model(cfg, vocab, device=device)
        if recipe.method == "rloo":  # policy with adapters (LoRA-off reference) and a frozen reward model
            reward = llava.frozen_copy(policy)
            return torch.nn.ModuleDict({"policy": llava.prepare_stage(policy, cfg, "lora"), "reward": reward})
        if recipe.trainable == "lora" or recipe.method == "reward_model":  # no reference, or LoRA-off
            return llava.prepare_stage(policy, cfg, recipe.trainable)
        reference = llava.frozen_copy(policy)
        return torch.nn.ModuleDict(
            {"policy": llava.prepare_stage(policy, cfg, recipe.trainable), "reference": reference}
        )

    def loss(m: Any, batch: int) -> Any:
        device = _device_of(m)
        if recipe.method == "reward_model":  # the chosen and the rejected rows, no reference
            return llava_synthetic.synthetic_loss(cfg, m, 2 * batch, device, vocab, text_tokens=text)
        if recipe.rloo is not None:
            k = recipe.rloo.samples_per_prompt
            return llava_synthetic.synthetic_rloo_loss(
                cfg, m, batch, device, vocab, text, samples_per_prompt=k
            )
        return llava_synthetic.synthetic_preference_loss(cfg, m, batch, device, vocab, text_tokens=text)

    replicated = recipe.method == "rloo"  # the recipe refuses FSDP and DeepSpeed for it
    return Phase(recipe.name, build, loss, recipe.batch_plan(samples), replicated=replicated)


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
    backward and the activations autograd saves (``planning.flops``)."""
    model = phase.build("meta")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    count = count_step(model, lambda m: phase.loss(m, 1))
    samples = phase.batch.max_steps * phase.batch.global_batch
    return PhaseCost(
        phase.name,
        float(count.train),
        samples,
        float(count.train) * samples,
        trainable,
        frozen,
        count.saved_bytes,
        phase.batch.global_batch,
        phase.batch.micro_batch,
        phase.quantized(model) if phase.quantized is not None else 0,
        phase.replicated,
    )


# one count per recipe and process: the pre-flight check and the estimate share it
_COUNTED: dict[str, list[PhaseCost]] = {}


def recipe_model_costs(recipe: TrainingRecipe) -> list[PhaseCost]:
    """Every phase of the recipe, counted (once per process for the same recipe)."""
    key = f"{type(recipe).__name__}:{recipe.model_dump_json()}"
    if key not in _COUNTED:
        _COUNTED[key] = [phase_cost(phase) for phase in phases(recipe)]
    return list(_COUNTED[key])
