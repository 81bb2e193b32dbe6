"""Labelled images for classification finetuning: ImageNet-style class folders or the digits, a fixed
stratified held-out split, and seeded few-shot sampling of the training images (CoOp's protocol: K images
per class drawn once per seed, Zhou et al. 2022 §4.1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlmforge.config.peft import ClassificationData, DigitsClasses
from vlmforge.data.digits import CLASSNAMES as DIGIT_NAMES
from vlmforge.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageFormat:
    """What the starting model was trained on: square side and per-channel normalisation."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class LabelledImages:
    """Images loaded lazily by position (``load``: source index -> normalised [3, H, W]) with labels."""

    load: Callable[[int], torch.Tensor]
    sources: np.ndarray  # source index of each item
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([self.load(int(self.sources[p])) for p in positions])
        return images, torch.from_numpy(self.labels[positions])

    def subset(self, positions: np.ndarray) -> LabelledImages:
        return LabelledImages(self.load, self.sources[positions], self.labels[positions])


@dataclass
class ClassificationSplits:
    """Training images (few-shot when asked), held-out test images, and the class names."""

    train: LabelledImages
    test: LabelledImages
    classnames: list[str]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions: ``fraction`` of each class held out (at least one when a class has two)."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        count = round(fraction * len(members))
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def validation_splits(splits: ClassificationSplits, fraction: float, seed: int) -> ClassificationSplits:
    """``fraction`` of each class's training images held out as the test split, for choosing
    hyperparameters without touching the real test images (VPT, Jia et al. 2022 §4.1: grid search on a
    validation split carved from the training data)."""
    fit, held = stratified_split(splits.train.labels, fraction, seed)
    return ClassificationSplits(splits.train.subset(fit), splits.train.subset(held), splits.classnames)


def few_shot(labels: np.ndarray, shots: int, seed: int, classnames: list[str]) -> np.ndarray:
    """``shots`` positions per class, drawn with ``seed``; a class with fewer images is an error."""
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for cls in range(len(classnames)):
        members = np.flatnonzero(labels == cls)
        if len(members) < shots:
            short.append(f"{classnames[cls]} ({len(members)})")
            continue
        chosen.append(rng.choice(members, size=shots, replace=False))
    if short:
        raise UserError(
            f"data.shots={shots}: these classes have fewer training images: {', '.join(short[:10])}",
            hint="lower data.shots or add images",
        )
    return np.sort(np.concatenate(chosen))


def classification_splits(cfg: ClassificationData, image: ImageFormat, seed: int) -> ClassificationSplits:
    """The recipe's training and test images, in the starting model's image format. The test split is
    the one a pretrain run on the same data holds out (``data.base.split_indices``): a digits run's
    held-out images stay unseen here."""
    from vlmforge.data.base import split_indices

    if isinstance(cfg, DigitsClasses):
        pool, test = _digits(image), None
        names = [DIGIT_NAMES[d] for d in cfg.classes or range(10)]
    else:
        pool, names = _class_folders(cfg.path, cfg.classnames, image, "data.path")
        test = (
            _class_folders(cfg.test_path, cfg.classnames, image, "data.test_path")[0]
            if cfg.test_path
            else None
        )
    if test is None:
        kept, held = split_indices(len(pool), pool.labels, cfg.val_fraction)
        train, test = pool.subset(kept), pool.subset(held)
    else:
        train = pool
    if isinstance(cfg, DigitsClasses) and cfg.classes:
        train, test = _only(train, cfg.classes), _only(test, cfg.classes)
    if cfg.shots is not None:
        train = train.subset(few_shot(train.labels, cfg.shots, seed, names))
    return ClassificationSplits(train, test, names)


def _only(images: LabelledImages, classes: list[int]) -> LabelledImages:
    """The images of ``classes``, relabelled 0.. in their order."""
    relabel = np.full(10, -1)
    relabel[classes] = np.arange(len(classes))
    kept = images.subset(np.flatnonzero(np.isin(images.labels, classes)))
    return LabelledImages(kept.load, kept.sources, relabel[kept.labels].astype(np.int64))


def _digits(image: ImageFormat) -> LabelledImages:
    from vlmforge.config.schema import DigitsData
    from vlmforge.data.digits import digits_set

    data = digits_set(DigitsData(image_size=image.size, mean=image.mean, std=image.std))
    assert data.labels is not None
    return LabelledImages(data.load_image, np.arange(len(data)), data.labels.astype(np.int64))  # type: ignore[arg-type]


def _class_folders(
    root: Path, names_file: Path | None, image: ImageFormat, field: str
) -> tuple[LabelledImages, list[str]]:
    from vlmforge.data.folder import load_rgb

    if not root.is_dir():
        raise UserError(
            f"{field}: {root} is not a directory", hint="give a folder with one sub-folder per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UserError(
            f"{field}: {root} has no class sub-folders", hint="put each class's images in root/<class>/"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    empty = [f.name for f in folders if not any(p.parent == f for p in paths)]
    if empty:
        raise UserError(
            f"{field}: class folders without images ({', '.join(IMAGE_SUFFIXES)}): {', '.join(empty[:10])}",
            hint="remove them or add images",
        )
    mean = torch.tensor(image.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(image.std, dtype=torch.float32).view(3, 1, 1)

    def load(i: int) -> torch.Tensor:
        return load_rgb(paths[i], image.size, mean, std)

    names = read_classnames(names_file, [f.name for f in folders])
    return LabelledImages(load, np.arange(len(paths)), np.asarray(labels, dtype=np.int64)), names


def read_classnames(path: Path | None, folders: list[str]) -> list[str]:
    """Class names from a file with one line per class folder (sorted order): 'name' or 'folder<TAB>name'."""
    if path is None:
        return folders
    if not path.is_file():
        raise UserError(
            f"data.classnames: {path} is not a file", hint="give a text file, one class name a line"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != len(folders):
        raise UserError(
            f"data.classnames: {path} has {len(lines)} names for {len(folders)} class folders",
            hint="write one line per class sub-folder, in sorted folder order",
        )
    names = []
    for line, folder in zip(lines, folders, strict=True):
        if "\t" in line:
            key, name = line.split("\t", 1)
            if key != folder:
                raise UserError(
                    f"data.classnames: {path} names folder {key!r} where the sorted folders have {folder!r}",
                    hint="list the folders in sorted order",
                )
            line = name.strip()
        names.append(line)
    return names
