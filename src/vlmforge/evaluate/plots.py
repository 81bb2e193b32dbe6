"""Plots of an evaluation's per-item predictions, written next to its results (``eval/``): the zero-shot
confusion matrix and per-class accuracy (up to ``MAX_PLOTTED_CLASSES`` classes), the retrieval recall
curve, R@k over every k, both directions, and the in-context accuracy over the number of examples k.
Drawn as ``vlmforge plan --plot`` draws (Agg, 120 dpi)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_PLOTTED_CLASSES = 100  # beyond this a confusion matrix or a bar per class is unreadable
PLOT_FILES = {
    "zeroshot": ("zeroshot.confusion.png", "zeroshot.per_class.png"),
    "retrieval": ("retrieval.recall.png",),
    "grounding": ("grounding.boxes.png",),
    "in_context": ("in_context.shots.png",),
}


def write_plots(task: str, metrics: dict[str, Any], folder: Path) -> list[Path]:
    """The plots of ``task`` that its predictions allow, in ``folder`` (an earlier evaluation's plots of
    the task are removed first); returns the files written."""
    for name in PLOT_FILES.get(task, ()):
        (folder / name).unlink(missing_ok=True)
    if task == "grounding" and metrics.get("gallery"):
        return [box_gallery(metrics["gallery"], folder / PLOT_FILES["grounding"][0])]
    if task == "in_context" and metrics.get("shots"):
        from vlmforge.evaluate.in_context import shots_plot

        return [shots_plot(metrics, folder / PLOT_FILES["in_context"][0])]
    rows = metrics.get("predictions")
    if not rows:
        return []
    if task == "zeroshot":
        return zero_shot_plots(rows, int(metrics.get("classes", 0)), folder)
    if task == "retrieval":
        return [recall_curve(first_hit_ranks_by_direction(rows), folder / PLOT_FILES["retrieval"][0])]
    return []


def confusion_matrix(labels: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """[classes, classes] counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Each class's fraction of images predicted as it (NaN for a class with no image)."""
    totals = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), totals, out=np.full(len(matrix), np.nan), where=totals > 0)


def class_names(rows: Sequence[dict[str, Any]], classes: int) -> list[str]:
    """The class names the prediction rows carry, by class id (the id where no row names it)."""
    names = {row["label"]: row.get("label_name") for row in rows}
    names |= {row["predicted"]: row.get("predicted_name") for row in rows}
    return [str(names.get(k) or k) for k in range(classes)]


def zero_shot_plots(rows: Sequence[dict[str, Any]], classes: int, folder: Path) -> list[Path]:
    """Confusion matrix and per-class accuracy bars, for at most ``MAX_PLOTTED_CLASSES`` classes."""
    if not 0 < classes <= MAX_PLOTTED_CLASSES:
        return []
    matrix = confusion_matrix([r["label"] for r in rows], [r["predicted"] for r in rows], classes)
    names = class_names(rows, classes)
    confusion, bars = (folder / name for name in PLOT_FILES["zeroshot"])
    return [confusion_plot(matrix, names, confusion), per_class_plot(per_class_accuracy(matrix), names, bars)]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    _pyplot().close(figure)
    return path


def confusion_plot(matrix: np.ndarray, names: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    side = min(4.5 + 0.12 * len(names), 16)
    figure, axis = plt.subplots(figsize=(side + 1, side), dpi=120)
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis, label="images")
    ticks = range(len(names))
    small = len(names) > 20
    axis.set_xticks(ticks, names, rotation=90, fontsize=6 if small else 8)
    axis.set_yticks(ticks, names, fontsize=6 if small else 8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(f"zero-shot confusion matrix ({int(matrix.sum())} images)")
    return _save(figure, path)


def per_class_plot(accuracy: np.ndarray, names: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(min(7 + 0.1 * len(names), 20), 4.5), dpi=120)
    axis.bar(range(len(names)), np.nan_to_num(accuracy), color="tab:blue")
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=6 if len(names) > 20 else 8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("top-1 accuracy")
    axis.set_title("zero-shot accuracy per class")
    axis.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)


def first_hit_ranks_by_direction(rows: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """{direction: each query's first-hit rank}, from retrieval prediction rows."""
    ranks: dict[str, list[int]] = {}
    for row in rows:
        ranks.setdefault(row["direction"], []).append(int(row["first_hit_rank"]))
    return ranks


def recall_curve(ranks: dict[str, list[int]], path: Path) -> Path:
    """R@k for every k from 1 to the number of items, one line per direction (log k)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    for direction, found in ranks.items():
        items = len(ranks.get(_other(direction), found))
        ks = np.arange(1, items + 1)
        recall = np.searchsorted(np.sort(found), ks, side="right") / len(found)
        axis.plot(ks, recall, label=direction.replace("_", " "))
    axis.set_xscale("log")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("k (items retrieved)")
    axis.set_ylabel("recall@k")
    axis.set_title("retrieval recall")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    return _save(figure, path)


def _other(direction: str) -> str:
    """The opposite direction: its queries are this direction's items."""
    return "text_to_image" if direction == "image_to_text" else "image_to_text"


def comparison_plot(values: dict[str, Sequence[float]], metrics: Sequence[str], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per run (``values``: run -> one value per metric)."""
    plt = _pyplot()
    width = 0.8 / max(len(values), 1)
    figure, axis = plt.subplots(figsize=(min(7 + 0.4 * len(metrics), 20), 4.5), dpi=120)
    for k, (label, found) in enumerate(values.items()):
        axis.bar(np.arange(len(metrics)) + (k - (len(values) - 1) / 2) * width, found, width, label=label)
    axis.set_xticks(range(len(metrics)), metrics, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("value (0-1)")
    axis.set_title("evaluation metrics by run")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def box_gallery(items: Sequence[dict[str, Any]], path: Path) -> Path:
    """A grid of images, each with its true box (green), the predicted one (red, dashed; none when the
    answer named no box) and the expression as its title; boxes are fractions of the image."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    columns = min(4, len(items))
    rows = -(-len(items) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, item in zip(axes.flat, items, strict=False):
        image = item["image"]
        side_y, side_x = image.shape[:2]
        axis.imshow(image, interpolation="nearest")
        for box, colour, style in ((item["truth"], "lime", "-"), (item["predicted"], "red", "--")):
            if box is not None:
                x1, y1, x2, y2 = box
                corner, width, height = (
                    (x1 * side_x - 0.5, y1 * side_y - 0.5),
                    (x2 - x1) * side_x,
                    (y2 - y1) * side_y,
                )
                axis.add_patch(
                    Rectangle(corner, width, height, fill=False, color=colour, linestyle=style, lw=1.5)
                )
        axis.set_title(item.get("expression", ""), fontsize=7)
    return _save(figure, path)
