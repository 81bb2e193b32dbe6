"""`vlmforge eval`: the tasks each family supports (zero-shot classification and image<->text retrieval for
models with an image and a text embedding, visual question answering for LLaVA), on a run's held-out
split or other data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.schema import (
    EvalRecipe,
    EvalTask,
    FinetuneRecipe,
    LlavaModel,
    ModelConfig,
    PretrainRecipe,
    RetrievalTask,
    TrainingRecipe,
    ZeroShotTask,
    recipe_verb,
)
from vlmforge.data.base import ImageTextSet
from vlmforge.data.tokenizers import TextTokenizer, load_tokenizer
from vlmforge.errors import UserError
from vlmforge.evaluate.metrics import retrieval_recall, topk_accuracy, zero_shot_classifier
from vlmforge.evaluate.vqa import vqa
from vlmforge.families import family_for
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
def encode_images(model: torch.nn.Module, data: ImageTextSet, batch_size: int) -> torch.Tensor:
    feats = []
    for start in range(0, len(data), batch_size):
        images = torch.stack([data.image(i) for i in range(start, min(start + batch_size, len(data)))])
        feats.append(model.encode_image(images, normalize=True).float())
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, tokenizer: TextTokenizer, texts: list[str], context_length: int, batch_size: int
) -> torch.Tensor:
    feats = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], context_length)
        feats.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(feats)


@dataclass
class EvalContext:
    """What every task sees: the model and its tokenizer, the data, and image features computed once."""

    model: Any
    tokenizer: Any  # TextTokenizer, or a transformers tokenizer for LLaVA
    context_length: int
    data: Any  # ImageTextSet, or a ConversationSet for LLaVA
    batch_size: int
    _image_features: torch.Tensor | None = None

    @property
    def image_features(self) -> torch.Tensor:
        if self._image_features is None:
            self._image_features = encode_images(self.model, self.data, self.batch_size)
        return self._image_features


def evaluate_model(
    model_cfg: ModelConfig | LlavaModel,
    model: torch.nn.Module,
    tokenizer: Any,
    context_length: int,
    data: Any,  # ImageTextSet, or a ConversationSet for LLaVA
    tasks: list[EvalTask],
    batch_size: int = 256,
) -> dict[str, dict[str, Any]]:
    """Run each task on ``data``; returns {task kind: metrics}."""
    if len(data) == 0:
        raise UserError(
            f"evaluation data {data.name!r} is empty", hint="set a val_fraction > 0 or give eval data"
        )
    supported = family_for(model_cfg).eval_tasks
    for task in tasks:
        if task.kind not in supported:
            raise UserError(
                f"eval task {task.kind!r} does not apply to model.kind {model_cfg.kind!r}",
                hint=f"tasks for this model: {', '.join(supported)}",
            )
    model.eval()
    context = EvalContext(model, tokenizer, context_length, data, batch_size)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        start = time.perf_counter()
        metrics = TASKS[task.kind](context, task)
        metrics["seconds"] = round(time.perf_counter() - start, 3)
        metrics["samples"] = len(data)
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
    metrics: dict[str, Any] = topk_accuracy(context.image_features @ classifier, labels, ks)
    metrics["classes"] = classes
    metrics["templates"] = len(templates)
    return metrics


def retrieval(context: EvalContext, task: RetrievalTask) -> dict[str, Any]:
    data = context.data
    texts = [data.captions_of(i)[i % len(data.captions_of(i))] for i in range(len(data))]
    text_features = encode_texts(
        context.model, context.tokenizer, texts, context.context_length, context.batch_size
    )
    match = task.match
    if match == "auto":
        match = "label" if data.labels is not None else "pair"
    groups = _labels(data, "label-matched retrieval") if match == "label" else torch.arange(len(data))
    metrics: dict[str, Any] = retrieval_recall(context.image_features, text_features, groups, groups, task.ks)
    metrics["match"] = match
    return metrics


TASKS: dict[str, Callable[[EvalContext, Any], dict[str, Any]]] = {
    "zeroshot": zero_shot,
    "retrieval": retrieval,
    "vqa": vqa,
}


# ----------------------------------------------------------------------------------- verb entry
def load_trained(run_dir: Path, checkpoint: Path | None = None) -> tuple[Any, Any, TrainingRecipe, Path]:
    """Rebuild a run's model from its resolved recipe and load its (final) checkpoint weights."""
    from vlmforge.config.load import load_recipe, read_yaml
    from vlmforge.models.contrastive import load_weights

    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(
            f"{run_dir}: not a run directory (no recipe.yaml)", hint="pass a directory under runs/"
        )
    if recipe_verb(read_yaml(run_dir / "recipe.yaml")) == "finetune":
        return load_finetuned(run_dir, checkpoint)
    recipe = load_recipe("pretrain", run_dir / "recipe.yaml")
    assert isinstance(recipe, PretrainRecipe)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    cfg = recipe.model.model_copy(update={"pretrained": None})
    model = family_for(cfg).models.build_model(cfg, tokenizer.vocab_size)
    ckpt = checkpoint or final_checkpoint(run_dir)
    load_weights(model, ckpt)
    return model, tokenizer, recipe, ckpt


def load_finetuned(run_dir: Path, weights: Path | None = None) -> tuple[Any, Any, FinetuneRecipe, Path]:
    """A finetune run's model with the weights of its last finished stage (or ``weights``)."""
    from vlmforge.config.load import load_recipe
    from vlmforge.data.conversations import IMAGE
    from vlmforge.data.conversations import load_tokenizer as load_conversation_tokenizer
    from vlmforge.finetune import final_weights, model_vocab_size
    from vlmforge.models.llava import trained_model

    recipe = load_recipe("finetune", run_dir / "recipe.yaml")
    assert isinstance(recipe, FinetuneRecipe)
    if weights is not None and weights.suffix != ".safetensors":
        raise UserError(
            f"checkpoint: {weights} is not a stage's weights file",
            hint="give RUN/stages/<stage>/model.safetensors, or leave it unset for the last stage's",
        )
    tokenizer = load_conversation_tokenizer(run_dir / "tokenizer")
    weights = weights or final_weights(run_dir)
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    return (
        trained_model(recipe.model, model_vocab_size(recipe, tokenizer), image_id, weights),
        tokenizer,
        recipe,
        weights,
    )


def run(recipe: EvalRecipe) -> EvalResult:
    """Evaluate a trained run; writes ``eval/<task>.json`` into the run directory."""
    from vlmforge.data.sources import build_eval_data

    torch.manual_seed(recipe.seed)
    model, tokenizer, train_recipe, ckpt = load_trained(recipe.run, recipe.checkpoint)
    data = build_eval_data(train_recipe, recipe.data)
    ctx = family_for(train_recipe.model).models.context_length(train_recipe.model, model)
    tasks = recipe.tasks or list(train_recipe.eval) or default_tasks(train_recipe)
    metrics = evaluate_model(train_recipe.model, model, tokenizer, ctx, data, tasks, recipe.batch_size)
    result = EvalResult(recipe.run, ckpt, data.name, metrics)
    write_eval_results(recipe.run, result.to_json())
    return result


def default_tasks(recipe: TrainingRecipe) -> list[EvalTask]:
    """Every task the run's model family supports, with default settings."""
    from pydantic import TypeAdapter

    kinds = family_for(recipe.model).eval_tasks
    return [TypeAdapter(EvalTask).validate_python({"kind": kind}) for kind in kinds]


def write_eval_results(run_dir: Path, result: dict[str, Any]) -> None:
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    for task, metrics in result["metrics"].items():
        write_json(
            out / f"{task}.json", {k: v for k, v in result.items() if k != "metrics"} | {"metrics": metrics}
        )
