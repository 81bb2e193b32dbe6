"""Referring expression grounding, RefCOCO-style (Kazemzadeh et al. 2014; Yu et al. 2016), as LLaVA-1.5
asks it: the model sees the image padded to a square with the mean colour (LLaVA-1.5's ``expand2square``,
image_aspect_ratio "pad") and answers [x1, y1, x2, y2] as fractions of that padded square, so the whole
image is seen and a box reads the same whatever the image's aspect ratio. Predicted boxes are mapped back
to the image's pixels; a hit is IoU >= the threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.config.benchmarks_llava import RefCocoTask
from vlmforge.data.referring import (  # noqa: F401  (padding, to_square_fractions: re-exported)
    from_square_fractions,
    pad_to_square,
    padding,
    referring_entry,
    to_square_fractions,
)
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.answering import Answer, Asked, generate_answers, question_prompt
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, subset

if TYPE_CHECKING:  # for annotations only: the model handle lives in a layer above
    from vlmforge.interop.inference_model import InferenceModel

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Referring:
    image: Path
    expression: str
    box: Box  # x1, y1, x2, y2 in pixels


def read_refcoco(path: Path, images: Path, max_samples: int | None = None) -> list[Referring]:
    """A JSON list of {image, expression, box: [x, y, w, h]} (pixels, COCO's box layout; ``max_samples``:
    a fixed random subset); every missing image is reported at once."""
    entries = read_json(path, "a JSON list of {image, expression, box: [x, y, w, h]} (pixels)")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: expected a non-empty JSON list of {{image, expression, box}}")
    fields = [referring_entry(entries[n], f"{path}: entry {n}") for n in subset(len(entries), max_samples)]
    files = image_paths(images, [image for image, _, _ in fields], path)
    return [
        Referring(file, expression, box) for (_, expression, box), file in zip(fields, files, strict=True)
    ]


def score(predicted: Sequence[Box | None], truth: Sequence[Box], threshold: float) -> dict[str, float]:
    """Accuracy@threshold and mean IoU of pixel boxes (an unreadable answer is a miss)."""
    from vlmforge.evaluate.grounding_metrics import grounding_accuracy

    return grounding_accuracy(list(predicted), list(truth), threshold=threshold)


def run(model: InferenceModel, task: RefCocoTask, batch_size: int) -> dict[str, Any]:
    """Accuracy@threshold and mean IoU; each prediction holds the answer, the box it names in the image's
    pixels (None when it names none) and its IoU with the true box."""
    from vlmforge.evaluate.benchmarks.features import drop_counts
    from vlmforge.evaluate.grounding_metrics import box_iou, parse_box

    items = read_refcoco(task.path, task.images or task.path.parent, task.max_samples)
    fill = tuple(round(channel * 255) for channel in model.transform.mean)
    asked = [
        Asked(str(n), question_prompt(task.prompt.format(item.expression), ""), item.image)
        for n, item in enumerate(items)
    ]
    outputs = generate_answers(
        model, asked, str(task.path), batch_size, task.max_new_tokens, lambda im: pad_to_square(im, fill)
    )
    drops = [output for output in outputs if not isinstance(output, Answer)]
    predictions, predicted, truth = [], [], []
    for item, output in zip(items, outputs, strict=True):
        if not isinstance(output, Answer):
            continue
        fractions = parse_box(output.text)
        box = None if fractions is None else from_square_fractions(fractions, output.size)
        predicted.append(box)
        truth.append(item.box)
        predictions.append(
            {
                "image": item.image.name,
                "expression": item.expression,
                "box": list(item.box),
                "output": output.text,
                "predicted_box": None if box is None else list(box),
                "iou": 0.0 if box is None else box_iou(box, item.box),
            }
        )
    metrics = score(predicted, truth, task.threshold) if truth else {}
    return {**metrics, "samples": len(truth), **drop_counts(drops), "predictions": predictions}
