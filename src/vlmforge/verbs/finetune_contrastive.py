"""`vlmforge finetune` on a contrastive model: tune a CLIP for classification with the recipe's method.

start model -> labelled images (held-out test split, few-shot training images) -> zero-shot accuracy of
the untuned model -> the method (linear probe, or a classifier trained with its parameters only; the
trainable share printed first) -> its accuracy on the same test images (and WiSE-FT's curve for full
finetuning) -> run dir.

Run directory: ``recipe.yaml``, ``manifest.json``, ``metrics.jsonl`` (training loss), ``model.safetensors``
(the tuned classifier's state: the CLIP under ``clip.`` plus the method's tensors; a linear probe's
``weight`` and ``bias`` on image embeddings), ``initial.safetensors`` (the method's new tensors before
training), ``plots/wise_ft.png`` and ``result.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.peft import ContrastiveFinetuneRecipe, FullFinetune, LinearProbe, TrainedMethod
from vlmforge.errors import UserError, raise_all
from vlmforge.runs.lifecycle import RunResult
from vlmforge.storage import WEIGHTS, is_completed, write_json


def run(
    recipe: ContrastiveFinetuneRecipe, resume: str = "never", confirm: Callable[[str], bool] | None = None
) -> RunResult:
    """Tune, evaluate against zero-shot, write the run directory; returns the result."""
    from vlmforge.data.classification import ImageFormat, classification_splits
    from vlmforge.interop.inference import load_for_inference, resolve_device
    from vlmforge.models.peft.build import zero_shot_classifier
    from vlmforge.runs.directory import manifest, prepare_run
    from vlmforge.runs.preflight import preflight
    from vlmforge.training.classifier_fit import accuracy

    del confirm  # one device, minutes: there is no cost to confirm
    raise_all(preflight(recipe))
    if resume != "never":
        raise UserError("a contrastive finetune run is not resumed", hint="run it again without --resume")
    device = resolve_device({"gpu": "cuda"}.get(recipe.train.accelerator, recipe.train.accelerator))
    start = start_folder(recipe.init_from)
    loaded = load_for_inference(start, str(device))
    if not hasattr(loaded.model, "encode_image") or not hasattr(loaded.model, "encode_text"):
        raise UserError(
            f"init_from: {start} holds a {loaded.kind} model, not a contrastive one",
            hint="start from a clip or siglip run, or an open_clip / transformers CLIP export",
        )
    transform = loaded.transform
    image = ImageFormat(transform.size, tuple(transform.mean), tuple(transform.std))
    splits = classification_splits(recipe.data, image, recipe.seed)
    templates = recipe.data.templates or list(loaded.templates)
    run_dir, _ = prepare_run(recipe, resume)
    torch.manual_seed(recipe.seed)
    write_json(run_dir / "manifest.json", manifest(recipe.seed, start.name, {"accelerator": str(device)}))

    batch = recipe.data.batch_size
    clip, tokenizer, context = loaded.model, loaded.tokenizer, loaded.context_length
    zero_shot = accuracy(
        zero_shot_classifier(clip, tokenizer, splits.classnames, templates, context),
        splits.test,
        batch,
        device,
    )
    started = time.perf_counter()
    if isinstance(recipe.method, LinearProbe):
        outcome = _linear_probe(recipe.method, recipe, clip, splits, run_dir, device)
    else:
        outcome = _trained(recipe.method, recipe, loaded, splits, templates, run_dir, device)
    metrics = {
        "method": recipe.method.method,
        "start": str(start),
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
    result = RunResult(
        run_dir, "completed", outcome.get("train", {}).get("step", 0), run_dir / WEIGHTS, None, metrics
    )
    result.write()
    return result


def start_folder(path: Path) -> Path:
    """``init_from``: a run directory or an exported model folder, or a folder of runs whose newest completed
    one is taken."""
    if not path.is_dir():
        raise UserError(
            f"init_from: {path} is not a directory", hint="give a pretrain run or an exported model"
        )
    from vlmforge.interop.inference import is_exported_model

    if (path / "recipe.yaml").is_file() or is_exported_model(path):
        return path
    runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))
    if not runs:
        raise UserError(
            f"init_from: {path} is neither a run directory, an exported model nor a folder of completed runs",
            hint="give runs/<name>/<timestamp>, runs/<name>, or a folder written by vlmforge export",
        )
    return runs[-1]


def _linear_probe(
    cfg: LinearProbe,
    recipe: ContrastiveFinetuneRecipe,
    clip: torch.nn.Module,
    splits: Any,
    run_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    from vlmforge.evaluate.probe_sweep import choose_c, fitted_probe
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
    loaded: Any,
    splits: Any,
    templates: list[str],
    run_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    from vlmforge.models.peft.build import method_classifier
    from vlmforge.models.peft.classifier import share_line, trainable_share
    from vlmforge.models.peft.wise_ft import trainable_state
    from vlmforge.training.classifier_fit import accuracy, fit_classifier

    base = {f"clip.{name}" for name, _ in loaded.model.named_parameters()}
    classifier = method_classifier(
        cfg, loaded.model, loaded.tokenizer, splits.classnames, templates, loaded.context_length, recipe.seed
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
    from vlmforge.models.peft.wise_ft import interpolate, load_state, trainable_state
    from vlmforge.training.classifier_fit import accuracy

    finetuned = trainable_state(classifier)
    curve = []
    for alpha in cfg.alphas:
        load_state(classifier, interpolate(zero_shot, finetuned, alpha))
        curve.append({"alpha": alpha, "top1": accuracy(classifier, test, batch, device)["top1"]})
    load_state(classifier, finetuned)
    best = max(curve, key=lambda row: (row["top1"], -abs(row["alpha"] - 0.5)))
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
