"""The evaluation tasks (zero-shot classification, image<->text retrieval and compositionality for models
with an image and a text embedding, captioning for generative models, a linear probe for any image
encoder, visual question answering and preference accuracy for LLaVA) and ``evaluate_model``, which runs
a list of them on one model and data set."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmforge.config.evaluation import EVAL_TASKS
from vlmforge.config.schema import (
    CompositionalTask,
    EvalTask,
    LinearProbeTask,
    LlavaModel,
    ModelConfig,
    RetrievalTask,
    ZeroShotTask,
)
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet
from vlmforge.data.perturb import PERTURBATIONS, attribute_words, perturb
from vlmforge.data.tokenizers import TextTokenizer
from vlmforge.errors import UserError
from vlmforge.evaluate.box_grounding import box_head_grounding
from vlmforge.evaluate.captioning import captioning
from vlmforge.evaluate.grounding import llava_grounding
from vlmforge.evaluate.in_context import in_context
from vlmforge.evaluate.item_predictions import compositional_rows, probe_rows, retrieval_rows, zero_shot_rows
from vlmforge.evaluate.metrics import (
    compositional_accuracy,
    retrieval_recall,
    topk_accuracy,
    zero_shot_classifier,
)
from vlmforge.evaluate.preference import PreferenceReference, preference
from vlmforge.evaluate.results import PREDICTIONS
from vlmforge.evaluate.vqa import Prompter, vqa
from vlmforge.models.linear_probe import linear_probe_accuracy


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, data: ImageTextSet, batch_size: int
) -> tuple[torch.Tensor, list[int], list[Drop]]:
    """Features of the usable images, their positions in ``data``, and the unusable ones (left out)."""
    feats, kept, dropped = [], [], []
    for start in range(0, len(data), batch_size):
        images = []
        for i in range(start, min(start + batch_size, len(data))):
            try:
                images.append(data.image(i))
                kept.append(i)
            except BadSample as bad:
                dropped.append(bad.drop)
        if images:
            feats.append(model.encode_image(torch.stack(images), normalize=True).float())
    if not feats:
        raise UserError(
            f"evaluation data {data.name!r}: no image can be read", hint="run `vlmforge data check`"
        )
    return torch.cat(feats), kept, dropped


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, tokenizer: TextTokenizer, texts: list[str], context_length: int, batch_size: int
) -> torch.Tensor:
    """[texts, dim] L2-normalised embeddings (on the CPU) of ``texts`` tokenised to ``context_length``,
    computed on the model's device."""
    device = next(model.parameters()).device
    feats = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], context_length)
        feats.append(model.encode_text(tokens.to(device), normalize=True).float().cpu())
    return torch.cat(feats)


@dataclass
class EvalContext:
    """What every task sees: the model and its tokenizer, the data, and image features computed once;
    ``train_data`` (the run's training split) for tasks that fit on it."""

    model: Any
    tokenizer: Any  # TextTokenizer, or a transformers tokenizer for LLaVA
    context_length: int
    data: Any  # ImageTextSet, or a ConversationSet for LLaVA
    batch_size: int
    image_features: torch.Tensor | None  # L2-normalised, one per readable image (None: conversation data)
    train_data: Any = None  # the training split: an ImageTextSet, or a ConversationSet for LLaVA
    reference: PreferenceReference | None = None  # an align run's frozen reference (preference task)
    prompter: Prompter | None = None  # LLaVA: question -> prompt ids (None: vlmforge's chat layout)


def evaluate_model(
    model_cfg: ModelConfig | LlavaModel | str,  # or just the model kind (an exported model)
    model: torch.nn.Module,
    tokenizer: Any,
    context_length: int,
    data: Any,  # ImageTextSet, or a ConversationSet for LLaVA
    tasks: list[EvalTask],
    batch_size: int = 256,
    train_data: Any = None,  # ImageTextSet, or a ConversationSet for LLaVA
    reference: PreferenceReference | None = None,
    prompter: Prompter | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each task on ``data`` (tasks that fit, on ``train_data``); returns {task kind: metrics}.
    ``prompter`` builds a LLaVA model's prompts (default: vlmforge's chat layout)."""
    if len(data) == 0:
        raise UserError(
            f"evaluation data {data.name!r} is empty", hint="set a val_fraction > 0 or give eval data"
        )
    kind = model_cfg if isinstance(model_cfg, str) else model_cfg.kind
    supported = EVAL_TASKS[kind]
    for task in tasks:
        if task.kind not in supported:
            raise UserError(
                f"eval task {task.kind!r} does not apply to model.kind {kind!r}",
                hint=f"tasks for this model: {', '.join(supported)}",
            )
    model.eval()
    image_features, dropped = None, []
    if isinstance(data, ImageTextSet):  # LLaVA's conversations are answered, not embedded
        image_features, kept, dropped = encode_images(model, data, batch_size)
        if dropped:  # evaluated on the readable samples; the count is reported with each task
            data = data.subset(np.asarray(kept), "readable")
    context = EvalContext(
        model, tokenizer, context_length, data, batch_size, image_features, train_data, reference, prompter
    )
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        start = time.perf_counter()
        metrics = TASKS[task.kind](context, task)
        metrics["seconds"] = round(time.perf_counter() - start, 3)
        metrics["samples"] = len(data)
        if dropped:
            metrics["dropped"] = len(dropped)
        results[task.kind] = metrics
    return results


def _labels(data: ImageTextSet, task: str) -> torch.Tensor:
    if data.labels is None or not data.classnames:
        raise UserError(
            f"{task} needs class labels, but data {data.name!r} has none",
            hint="add a 'label' column to the captions file (and data.classnames), or drop this task",
        )
    return torch.tensor([data.label(i) for i in range(len(data))])


def zero_shot(context: EvalContext, task: ZeroShotTask) -> dict[str, Any]:
    data = context.data
    labels = _labels(data, "zero-shot classification")
    templates = task.templates or list(data.prompts)
    prompts = [t.format(name) for name in data.classnames or [] for t in templates]
    prompt_features = encode_texts(
        context.model, context.tokenizer, prompts, context.context_length, context.batch_size
    )
    classes = len(data.classnames or [])
    classifier = zero_shot_classifier(prompt_features.view(classes, len(templates), -1))
    ks = (1, 5) if classes > 5 else (1,)
    logits = context.image_features @ classifier
    metrics: dict[str, Any] = topk_accuracy(logits, labels, ks)
    metrics["classes"] = classes
    metrics["templates"] = len(templates)
    metrics[PREDICTIONS] = zero_shot_rows(logits, labels, data.classnames or [])
    return metrics


def _paired_captions(data: ImageTextSet) -> list[str]:
    """One caption per image, the same for every task and run."""
    return [data.captions_of(i)[i % len(data.captions_of(i))] for i in range(len(data))]


def retrieval(context: EvalContext, task: RetrievalTask) -> dict[str, Any]:
    data = context.data
    texts = _paired_captions(data)
    text_features = encode_texts(
        context.model, context.tokenizer, texts, context.context_length, context.batch_size
    )
    match = task.match
    if match == "auto":
        match = "label" if data.labels is not None else "pair"
    groups = _labels(data, "label-matched retrieval") if match == "label" else torch.arange(len(data))
    images = context.image_features
    metrics: dict[str, Any] = retrieval_recall(images, text_features, groups, groups, task.ks)
    metrics["match"] = match
    metrics[PREDICTIONS] = retrieval_rows(images, text_features, groups, groups, max(task.ks))
    return metrics


def compositional(context: EvalContext, task: CompositionalTask) -> dict[str, Any]:
    """Each image's caption vs its reordered copies (``vlmforge.data.perturb``), by cosine similarity."""
    captions = _paired_captions(context.data)
    attributes = attribute_words(task.attributes)
    streams = {kind: k for k, kind in enumerate(PERTURBATIONS)}  # a perturbation does not depend on the list
    perturbations = [
        [
            perturb(c, kind, np.random.default_rng([task.seed, i, streams[kind]]), attributes)
            for kind in task.perturbations
        ]
        for i, c in enumerate(captions)
    ]
    valid = torch.tensor([[p is not None for p in row] for row in perturbations]).view(len(captions), -1)
    if not valid.any():
        raise UserError(
            f"compositional: none of {task.perturbations} applies to the captions of {context.data.name!r}",
            hint="add swap_words or shuffle_words (they apply to any caption of two distinct words)",
        )
    perturbed = [p for row in perturbations for p in row if p is not None]
    text_features = encode_texts(
        context.model, context.tokenizer, captions + perturbed, context.context_length, context.batch_size
    )
    images = context.image_features
    perturbed_scores = torch.full(valid.shape, float("-inf"))
    rows = valid.nonzero()[:, 0]
    perturbed_scores[valid] = (images[rows] * text_features[len(captions) :]).sum(dim=1)
    caption_scores = (images * text_features[: len(captions)]).sum(dim=1)
    metrics: dict[str, Any] = compositional_accuracy(
        caption_scores, perturbed_scores, valid, task.perturbations
    )
    metrics[PREDICTIONS] = compositional_rows(caption_scores, perturbed_scores, valid, task.perturbations)
    return metrics


def linear_probe(context: EvalContext, task: LinearProbeTask) -> dict[str, Any]:
    """Fit on frozen image features of the training split (a fixed random subset of at most
    ``max_train_samples``), score on the evaluation data."""
    train, data = context.train_data, context.data
    if train is None or len(train) == 0:
        raise UserError("linear_probe needs the run's training split, which is empty")
    if train.classnames != data.classnames:
        raise UserError(
            f"linear_probe: classes of {data.name!r} differ from the training data's {train.name!r}",
            hint="evaluate on data with the same classnames, or drop the linear_probe task",
        )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    subset = train.subset(order[: task.max_train_samples].sort().values.numpy(), "probe")
    features, kept, dropped = encode_images(context.model, subset, context.batch_size)
    if dropped:
        subset = subset.subset(np.asarray(kept), "readable")
    labels = _labels(data, "linear_probe")
    metrics: dict[str, Any] = linear_probe_accuracy(
        features, _labels(subset, "linear_probe"), context.image_features, labels, task.C, task.max_iter
    )
    metrics["train_samples"] = len(subset)
    metrics["classes"] = len(data.classnames or [])
    metrics[PREDICTIONS] = probe_rows(labels.tolist(), metrics.pop("predicted"))
    return metrics


def grounding(context: EvalContext, task: Any) -> dict[str, Any]:
    """A contrastive model's box head on image-caption data with boxes; LLaVA's answers on conversations."""
    if isinstance(context.data, ImageTextSet):
        return box_head_grounding(context, task)
    return llava_grounding(context, task)


TASKS: dict[str, Callable[[EvalContext, Any], dict[str, Any]]] = {
    "zeroshot": zero_shot,
    "retrieval": retrieval,
    "compositional": compositional,
    "captioning": captioning,
    "linear_probe": linear_probe,
    "vqa": vqa,
    "preference": preference,
    "grounding": grounding,
    "in_context": in_context,
}
