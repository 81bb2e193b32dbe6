"""Tuning a contrastive model for classification, as `vlmforge finetune` runs a recipe with a ``method``:
zero-shot accuracy of the untuned model -> the method (a linear probe, or a classifier trained with its
parameters only; the trainable share printed first) -> its accuracy on the same test images (and WiSE-FT's
curve for full finetuning).

Files written into the run directory: ``metrics.jsonl`` (training loss), ``model.safetensors`` (the tuned
classifier's state: the CLIP under ``clip.`` plus the method's tensors; a linear probe's ``weight`` and
``bias`` on image embeddings), ``initial.safetensors`` (the method's new tensors before training) and
``plots/wise_ft.png``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.peft import ContrastiveFinetuneRecipe, FullFinetune, LinearProbe, TrainedMethod
from vlmforge.data.classification import ClassificationSplits
from vlmforge.storage import WEIGHTS


@dataclass
class StartModel:
    """The untuned model: an open_clip-style CLIP (encode_image / encode_text) and how it reads text."""

    model: torch.nn.Module
    tokenizer: Any
    context_length: int
    templates: list[str]


def tune(
    recipe: ContrastiveFinetuneRecipe,
    start: StartModel,
    splits: ClassificationSplits,
    run_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Tune with the recipe's method; the metrics: zero-shot and tuned accuracy, trainable share, ..."""
    from vlmforge.models.peft.build import zero_shot_classifier
    from vlmforge.training.classifier_fit import accuracy

    batch = recipe.data.batch_size
    zero_shot = accuracy(
        zero_shot_classifier(
            start.model, start.tokenizer, splits.classnames, start.templates, start.context_length
        ),
        splits.test,
        batch,
        device,
    )
    started = time.perf_counter()
    if isinstance(recipe.method, LinearProbe):
        outcome = _linear_probe(recipe.method, recipe, start.model, splits, run_dir, device)
    else:
        outcome = _trained(recipe.method, recipe, start, splits, run_dir, device)
    return {
        "method": recipe.method.method,
        "zero_shot": zero_shot,
        "tuned": outcome.pop("scores"),
        "classification": {
            "classes": len(splits.classnames),
            "train_images": len(splits.train),
            "test_images": len(splits.test),
            "shots": recipe.data.shots,
        },
        "seconds": round(time.perf_counter() - started, 3),
        **outcome,
    }


def _linear_probe(
    cfg: LinearProbe,
    recipe: ContrastiveFinetuneRecipe,
    clip: torch.nn.Module,
    splits: ClassificationSplits,
    run_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    from vlmforge.models.linear_probe import choose_c, fitted_probe
    from vlmforge.models.peft.classifier import share_line, trainable_share
    from vlmforge.training.classifier_fit import predict, scores

    classes = len(splits.classnames)
    share = trainable_share(clip)
    dim = int(clip.encode_image(splits.train.batch(torch.arange(1).numpy())[0].to(device)).shape[-1])
    head = classes * (dim + 1)
    share = {"trainable": head, "total": share["total"] + head}
    share["percent"] = round(100 * head / share["total"], 4)
    print(share_line(share), file=sys.stderr, flush=True)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(clip.encode_image(images), dim=-1)

    batch = recipe.data.batch_size
    train_x, train_y = predict(embed, splits.train, batch, device)
    test_x, test_y = predict(embed, splits.test, batch, device)
    chosen = choose_c(train_x, train_y, cfg.c_values, cfg.validation_fraction, cfg.max_iter, recipe.seed)
    probe = fitted_probe(train_x, train_y, chosen["c"], cfg.max_iter)
    _save(probe, run_dir / WEIGHTS)
    logits = test_x @ probe["weight"].T + probe["bias"]
    return {"scores": scores(logits, test_y, classes), "trainable": share, "linear_probe": chosen}


def _trained(
    cfg: TrainedMethod,
    recipe: ContrastiveFinetuneRecipe,
    start: StartModel,
    splits: ClassificationSplits,
    run_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    from vlmforge.models.peft.build import method_classifier
    from vlmforge.models.peft.classifier import share_line, trainable_share
    from vlmforge.models.peft.wise_ft import trainable_state
    from vlmforge.training.classifier_fit import accuracy, fit_classifier

    base = {f"clip.{name}" for name, _ in start.model.named_parameters()}
    classifier = method_classifier(
        cfg,
        start.model,
        start.tokenizer,
        splits.classnames,
        start.templates,
        start.context_length,
        recipe.seed,
    ).to(device)
    share = trainable_share(classifier)
    print(share_line(share), file=sys.stderr, flush=True)
    before = trainable_state(classifier)
    _save({name: t for name, t in before.items() if name not in base}, run_dir / "initial.safetensors")
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as log:

        def write(row: dict[str, Any]) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()

        batch = recipe.data.batch_size
        fit = fit_classifier(
            classifier,
            splits.train,
            batch,
            cfg.max_steps,
            recipe.optim,
            recipe.seed,
            device,
            write,
            recipe.train.precision,
        )
    outcome: dict[str, Any] = {"trainable": share, "train": {"step": fit["steps"], **fit}}
    if isinstance(cfg, FullFinetune):
        outcome["wise_ft"] = _wise_ft(cfg, classifier, before, splits.test, batch, device, run_dir)
    outcome["scores"] = accuracy(classifier, splits.test, batch, device)
    _save(classifier.state_dict(), run_dir / WEIGHTS)
    return outcome


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: t.detach().cpu().contiguous().clone() for name, t in state.items()}, str(path))


def _wise_ft(
    cfg: FullFinetune,
    classifier: torch.nn.Module,
    zero_shot: dict[str, torch.Tensor],
    test: Any,
    batch: int,
    device: torch.device,
    run_dir: Path,
) -> dict[str, Any]:
    """Accuracy along WiSE-FT's line from the zero-shot to the finetuned weights (left finetuned)."""
    from vlmforge.models.peft.wise_ft import best_point, interpolate, load_state, trainable_state
    from vlmforge.training.classifier_fit import accuracy

    finetuned = trainable_state(classifier)
    curve = []
    for alpha in cfg.alphas:
        load_state(classifier, interpolate(zero_shot, finetuned, alpha))
        curve.append({"alpha": alpha, "top1": accuracy(classifier, test, batch, device)["top1"]})
    load_state(classifier, finetuned)
    best = best_point(curve)
    plot = _plot_curve(curve, run_dir / "plots" / "wise_ft.png")
    return {
        "curve": curve,
        "best_alpha": best["alpha"],
        "best_top1": best["top1"],
        "plot": str(plot.relative_to(run_dir)),
    }


def _plot_curve(curve: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot([row["alpha"] for row in curve], [row["top1"] for row in curve], marker="o")
    axis.set_xlabel("alpha (0: zero-shot weights, 1: finetuned)")
    axis.set_ylabel("test top-1")
    axis.set_title("WiSE-FT weight-space interpolation")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
