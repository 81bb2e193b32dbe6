"""ImageNet-style zero-shot classification from class folders (torchvision's ImageFolder layout:
root/<class>/**/<image>, classes in sorted folder order), with optional class-name and template files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmforge.config.benchmarks import ImageNetTask
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.features import Picture, drop_counts, image_features
from vlmforge.evaluate.benchmarks.layout import read_json, read_text, subset
from vlmforge.evaluate.metrics import topk_accuracy

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively as ImageFolder does
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "a folder of class folders, root/<class>/<image>.JPEG (ImageFolder's layout)"
TOP_PREDICTIONS = 5


def class_folders(root: Path) -> list[str]:
    """The class folders of ``root``, sorted as ImageFolder sorts them."""
    if not root.is_dir():
        raise UserError(f"imagenet.root: {root} is not a folder", hint=f"give {LAYOUT}")
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not folders:
        raise UserError(f"imagenet.root: {root} has no class folders", hint=f"give {LAYOUT}")
    return folders


def folder_images(root: Path, folders: list[str]) -> tuple[list[str], list[int]]:
    """(image paths relative to ``root``, class index of each), every class folder's images sorted."""
    files: list[str] = []
    labels: list[int] = []
    empty = []
    for label, folder in enumerate(folders):
        found = sorted(
            str(path.relative_to(root))
            for path in (root / folder).rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        )
        if not found:
            empty.append(folder)
        files += found
        labels += [label] * len(found)
    if empty:
        raise UserError(
            f"imagenet.root: {len(empty)} class folder(s) of {root} hold no image: {', '.join(empty[:5])}",
            hint=f"image files end in {', '.join(IMAGE_SUFFIXES)}; remove folders that are not classes",
        )
    return files, labels


def class_names(path: Path | None, folders: list[str]) -> list[str]:
    """The name of each class folder: from a text file (one per line, in sorted-folder order) or a JSON
    object {folder: name}; the folder names themselves without a file."""
    if path is None:
        return list(folders)
    if path.suffix.lower() == ".json":
        mapping = read_json(path, "a JSON object {class folder: class name}")
        if not isinstance(mapping, dict):
            raise UserError(f"imagenet.classnames: {path} is not a JSON object {{folder: name}}")
        missing = [f for f in folders if not isinstance(mapping.get(f), str)]
        if missing:
            raise UserError(
                f"imagenet.classnames: {path} names no class for {len(missing)} folder(s): "
                f"{', '.join(missing[:5])}",
                hint="map every class folder of root to its name",
            )
        return [mapping[f] for f in folders]
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(names) != len(folders):
        raise UserError(
            f"imagenet.classnames: {path} has {len(names)} names, the root has {len(folders)} class folders",
            hint="one name per line, in the sorted order of the class folders",
        )
    return names


def read_templates(path: Path) -> list[str]:
    """Prompt templates, one per non-empty line, each with one '{}'."""
    templates = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if line.count("{}") != 1:
            raise UserError(
                f"imagenet.templates: {path}, line {number}: {line.strip()!r} needs one '{{}}' for the class",
                hint="e.g. a photo of a {}.",
            )
        templates.append(line.strip())
    if not templates:
        raise UserError(f"imagenet.templates: {path} holds no template", hint="one template per line")
    return templates


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float | None]:
    """Top-1 accuracy of each class over its images (None: no image of it was evaluated)."""
    out: list[float | None] = []
    for c in range(classes):
        mine = labels == c
        out.append(float((predicted[mine] == c).float().mean()) if mine.any() else None)
    return out


def imagenet(model: Any, task: ImageNetTask, batch_size: int) -> dict[str, Any]:
    """Zero-shot top-1/top-5 and mean per-class accuracy (the mean of the classes' accuracies, CLIP's
    metric for class-imbalanced sets, Radford et al. 2021 Table 9), with each image's top predictions."""
    from vlmforge.evaluate.predictions import class_embeddings

    folders = class_folders(task.root)
    names = class_names(task.classnames, folders)
    templates = read_templates(task.templates) if task.templates else list(model.templates)
    files, labels = folder_images(task.root, folders)
    chosen = subset(len(files), task.max_samples)
    pictures = [Picture(task.root / files[i], files[i]) for i in chosen]
    features, kept, dropped = image_features(model, pictures, str(task.root), batch_size)
    classifier = class_embeddings(model, names, templates, batch_size).float().cpu()
    logits = features @ classifier
    truth = torch.tensor([labels[chosen[i]] for i in kept])
    ks = (1, 5) if len(folders) > 5 else (1,)
    metrics: dict[str, Any] = topk_accuracy(logits, truth, ks)
    top = logits.topk(min(TOP_PREDICTIONS, len(folders)), dim=1).indices
    accuracies = per_class_accuracy(top[:, 0], truth, len(folders))
    evaluated = [a for a in accuracies if a is not None]
    metrics["mean_per_class_accuracy"] = sum(evaluated) / len(evaluated)
    metrics |= {
        "samples": len(kept),
        **drop_counts(dropped),
        "classes": len(folders),
        "templates": len(templates),
    }
    metrics["per_class_accuracy"] = [
        {"class": folder, "name": name, "accuracy": accuracy}
        for folder, name, accuracy in zip(folders, names, accuracies, strict=True)
    ]
    metrics["predictions"] = [
        {
            "file": files[chosen[i]],
            "label": names[int(truth[row])],
            "predicted": names[int(top[row, 0])],
            "top5": [names[int(c)] for c in top[row]],
        }
        for row, i in enumerate(kept)
    ]
    return metrics
