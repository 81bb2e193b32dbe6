"""Referring-expression grounding on held-out referring data (``data.referring.ReferringSet``): the model
names a box for each expression, scored against the exact box by the RefCOCO protocol
(``grounding_metrics``: accuracy at an IoU threshold and mean IoU), beside the centre-box baseline — a
box of the training boxes' mean width and height at the image centre, which any model that reads the
image should beat. LLaVA models answer in Kosmos-2 location tokens (``data.locations``), decoded to
cell centres as Kosmos-2 does; IoUs are computed in the pixels of each image's padded square."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import GroundingTask
from vlmforge.data.referring import Box, ReferringSet
from vlmforge.errors import UserError
from vlmforge.evaluate.grounding_metrics import box_iou, grounding_accuracy
from vlmforge.evaluate.results import GALLERY, PREDICTIONS

# (images [B, 3, H, W], questions, expressions) -> predicted boxes as fractions (None: no box named)
BoxPredictor = Callable[[torch.Tensor, list[str], list[str]], list[Box | None]]


def referring_data(data: Any, role: str) -> ReferringSet:
    if not isinstance(data, ReferringSet):
        raise UserError(
            f"grounding needs referring-expression {role} data, not {getattr(data, 'name', data)!r}",
            hint="use data.kind referring-canvases or refcoco-json, or drop the grounding task",
        )
    return data


def mean_box_size(data: ReferringSet) -> tuple[float, float]:
    """Mean (width, height) of ``data``'s boxes, as fractions of their padded squares."""
    boxes = np.array([data.box(i) for i in range(len(data))])
    return float((boxes[:, 2] - boxes[:, 0]).mean()), float((boxes[:, 3] - boxes[:, 1]).mean())


def centre_box(size: tuple[float, float]) -> Box:
    """A box of ``size`` (fractions) centred on the image."""
    width, height = size
    return (0.5 - width / 2, 0.5 - height / 2, 0.5 + width / 2, 0.5 + height / 2)


def in_pixels(box: Sequence[float] | None, side: float) -> Box | None:
    """A box in fractions of a padded square as pixels of that square."""
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (x1 * side, y1 * side, x2 * side, y2 * side)


def grounding_scores(
    predicted: Sequence[Box | None],
    truth: Sequence[Box],
    sides: Sequence[float],
    baseline_size: tuple[float, float],
    threshold: float,
) -> dict[str, float]:
    """``accuracy@<threshold>`` and ``mean_iou`` of the predictions, and the same of the centre box
    (``baseline_accuracy@<threshold>``, ``baseline_mean_iou``); boxes in fractions, IoU in pixels."""
    pixels = [in_pixels(box, side) for box, side in zip(predicted, sides, strict=True)]
    true_pixels = [in_pixels(box, side) for box, side in zip(truth, sides, strict=True)]
    centre = centre_box(baseline_size)
    baseline = [in_pixels(centre, side) for side in sides]
    model = grounding_accuracy(pixels, true_pixels, threshold)  # type: ignore[arg-type]
    reference = grounding_accuracy(baseline, true_pixels, threshold)  # type: ignore[arg-type]
    return model | {f"baseline_{key}": value for key, value in reference.items()}


def evaluate_boxes(
    data: ReferringSet,
    train: Any,
    task: GroundingTask,
    batch_size: int,
    predict: BoxPredictor,
) -> dict[str, Any]:
    """Scores, per-expression predictions and the gallery of the first ``task.shown`` images, for boxes
    ``predict`` names; the baseline's box size is the training split's mean (the evaluated data's when
    no training split is at hand, as ``baseline_size_from`` says)."""
    count = min(len(data), task.max_samples or len(data))
    predicted: list[Box | None] = []
    gallery: list[dict[str, Any]] = []
    for start in range(0, count, batch_size):
        indices = range(start, min(start + batch_size, count))
        images = torch.stack([data.image(i) for i in indices])
        questions = [data.turns(i)[0][1] for i in indices]
        predicted += predict(images, questions, [data.images.captions_of(i)[0] for i in indices])
        for i, image in zip(indices, images, strict=False):
            if len(gallery) < task.shown:
                gallery.append(
                    {"image": _displayable(image), "truth": data.box(i), "predicted": predicted[i]}
                )
    truth = [data.box(i) for i in range(count)]
    sides = [data.side(i) for i in range(count)]
    fitted = isinstance(train, ReferringSet) and len(train) > 0
    size = mean_box_size(train if fitted else data)
    metrics: dict[str, Any] = grounding_scores(predicted, truth, sides, size, task.threshold)
    metrics["baseline_size_from"] = "train" if fitted else "eval"
    metrics["evaluated"] = count
    metrics["answered"] = sum(box is not None for box in predicted) / count
    rows = []
    for i in range(count):
        box, true = in_pixels(predicted[i], sides[i]), in_pixels(truth[i], sides[i])
        assert true is not None
        rows.append(
            {
                "key": data.images.key(i),
                "expression": data.images.captions_of(i)[0],
                "box": list(true),
                "predicted_box": None if box is None else list(box),
                "iou": 0.0 if box is None else box_iou(box, true),
            }
        )
    for entry, row in zip(gallery, rows, strict=False):
        entry["expression"] = row["expression"]
    return metrics | {PREDICTIONS: rows, GALLERY: gallery}


def _displayable(image: torch.Tensor) -> np.ndarray:
    """[H, W, 3] floats in [0, 1] of a normalised image tensor, stretched to its own range."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return scaled.permute(1, 2, 0).cpu().numpy()


def llava_grounding(context: Any, task: GroundingTask) -> dict[str, Any]:
    """A LLaVA model's greedy answers, read as Kosmos-2 location tokens on the data's grid."""
    from vlmforge.data.locations import parse_box_answer
    from vlmforge.evaluate.vqa import answer

    data = referring_data(context.data, "evaluation")

    def predict(images: torch.Tensor, questions: list[str], expressions: list[str]) -> list[Box | None]:
        answers = answer(
            context.model,
            context.tokenizer,
            questions,
            list(images),
            task.max_new_tokens,
            prompter=context.prompter,
        )
        return [parse_box_answer(text, data.bins) for text in answers]

    metrics = evaluate_boxes(data, context.train_data, task, context.batch_size, predict)
    return metrics | grid_ceiling(data, metrics["evaluated"], task.threshold)


def grid_ceiling(data: ReferringSet, count: int, threshold: float) -> dict[str, float]:
    """The scores of the true boxes written on the grid and read back (``grid_accuracy@<threshold>``,
    ``grid_mean_iou``): the most location tokens on this grid can reach."""
    from vlmforge.data.locations import box_to_cells, cells_to_box

    truth = [data.box(i) for i in range(count)]
    read_back = [cells_to_box(*box_to_cells(box, data.bins), data.bins) for box in truth]
    sides = [data.side(i) for i in range(count)]
    pixels = [in_pixels(box, side) for box, side in zip(read_back, sides, strict=True)]
    true_pixels = [in_pixels(box, side) for box, side in zip(truth, sides, strict=True)]
    scores = grounding_accuracy(pixels, true_pixels, threshold)  # type: ignore[arg-type]
    return {f"grid_{key}": value for key, value in scores.items()}
