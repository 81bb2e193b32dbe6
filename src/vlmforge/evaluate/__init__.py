"""`vlmforge eval`: zero-shot classification and image<->text retrieval for contrastive models."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import (
    EvalRecipe,
    EvalTask,
    PretrainRecipe,
    RetrievalTask,
    ZeroShotTask,
)
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet
from vlmforge.data.tokenizers import TextTokenizer, load_tokenizer
from vlmforge.errors import UserError
from vlmforge.evaluate.metrics import retrieval_recall, topk_accuracy, zero_shot_classifier
from vlmforge.runs import final_checkpoint, write_json


@dataclass
class EvalResult:
    run_dir: Path
    checkpoint: Path
    data: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "metrics": self.metrics,
        }


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
    feats = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], context_length)
        feats.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(feats)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: TextTokenizer,
    context_length: int,
    data: ImageTextSet,
    tasks: list[EvalTask],
    batch_size: int = 256,
) -> dict[str, dict[str, Any]]:
    """Run each task on ``data``; returns {task kind: metrics}."""
    if len(data) == 0:
        raise UserError(
            f"evaluation data {data.name!r} is empty", hint="set a val_fraction > 0 or give eval data"
        )
    model.eval()
    image_features, kept, dropped = encode_images(model, data, batch_size)
    if dropped:  # evaluated on the readable samples; the count is reported with each task
        data = data.subset(np.asarray(kept), "readable")
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        start = time.perf_counter()
        if isinstance(task, ZeroShotTask):
            metrics = _zero_shot(model, tokenizer, context_length, data, task, image_features, batch_size)
        elif isinstance(task, RetrievalTask):
            metrics = _retrieval(model, tokenizer, context_length, data, task, image_features, batch_size)
        else:  # pragma: no cover - the schema admits only the tasks above
            raise TypeError(f"unknown eval task {task!r}")
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


def _zero_shot(model, tokenizer, context_length, data, task, image_features, batch_size) -> dict[str, Any]:
    labels = _labels(data, "zero-shot classification")
    templates = task.templates or list(data.prompts)
    prompts = [t.format(name) for name in data.classnames for t in templates]
    prompt_features = encode_texts(model, tokenizer, prompts, context_length, batch_size)
    classifier = zero_shot_classifier(prompt_features.view(len(data.classnames), len(templates), -1))
    ks = (1, 5) if len(data.classnames) > 5 else (1,)
    metrics: dict[str, Any] = topk_accuracy(image_features @ classifier, labels, ks)
    metrics["classes"] = len(data.classnames)
    metrics["templates"] = len(templates)
    return metrics


def _retrieval(model, tokenizer, context_length, data, task, image_features, batch_size) -> dict[str, Any]:
    texts = [data.captions_of(i)[i % len(data.captions_of(i))] for i in range(len(data))]
    text_features = encode_texts(model, tokenizer, texts, context_length, batch_size)
    match = task.match
    if match == "auto":
        match = "label" if data.labels is not None else "pair"
    groups = _labels(data, "label-matched retrieval") if match == "label" else torch.arange(len(data))
    metrics: dict[str, Any] = retrieval_recall(image_features, text_features, groups, groups, task.ks)
    metrics["match"] = match
    return metrics


# ----------------------------------------------------------------------------------- verb entry
def load_trained(
    run_dir: Path, checkpoint: Path | None = None
) -> tuple[Any, TextTokenizer, PretrainRecipe, Path]:
    """Rebuild a run's model from its resolved recipe and load its (final) checkpoint weights."""
    from vlmforge.config.load import load_recipe
    from vlmforge.models.contrastive import build_clip, load_weights

    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(
            f"{run_dir}: not a run directory (no recipe.yaml)", hint="pass a directory under runs/"
        )
    recipe = load_recipe("pretrain", run_dir / "recipe.yaml")
    assert isinstance(recipe, PretrainRecipe)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    model = build_clip(recipe.model.model_copy(update={"pretrained": None}), tokenizer.vocab_size)
    ckpt = checkpoint or final_checkpoint(run_dir)
    load_weights(model, ckpt)
    return model, tokenizer, recipe, ckpt


def run(recipe: EvalRecipe) -> EvalResult:
    """Evaluate a trained run; writes ``eval/<task>.json`` into the run directory."""
    from vlmforge.data.sources import build_eval_data
    from vlmforge.models.contrastive import context_length

    torch.manual_seed(recipe.seed)
    model, tokenizer, train_recipe, ckpt = load_trained(recipe.run, recipe.checkpoint)
    data = build_eval_data(train_recipe, recipe.data)
    metrics = evaluate_model(
        model, tokenizer, context_length(train_recipe.model, model), data, recipe.tasks, recipe.batch_size
    )
    result = EvalResult(recipe.run, ckpt, data.name, metrics)
    write_eval_results(recipe.run, result.to_json())
    return result


def write_eval_results(run_dir: Path, result: dict[str, Any]) -> None:
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    for task, metrics in result["metrics"].items():
        write_json(
            out / f"{task}.json", {k: v for k, v in result.items() if k != "metrics"} | {"metrics": metrics}
        )
