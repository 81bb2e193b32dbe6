"""Grounding of a contrastive model with X-VLM's box head (``models.box_head``) on held-out image-caption
data with boxes (``data.kind: box-canvases``): the box named for each caption, scored by the RefCOCO
protocol beside the centre-box baseline, as ``evaluate.grounding`` scores LLaVA's answers."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.schema import GroundingTask
from vlmforge.data.base import ImageTextSet
from vlmforge.errors import UserError
from vlmforge.evaluate.grounding import grounding_scores, mean_box_size
from vlmforge.models.box_head import predict_boxes


def box_head_grounding(context: Any, task: GroundingTask) -> dict[str, Any]:
    """``accuracy@<threshold>`` and ``mean_iou`` of the head's boxes and of the centre box of the training
    boxes' mean size; IoU does not depend on the scale, so boxes are compared as fractions of the image."""
    data, model = context.data, context.model
    if getattr(data, "boxes", None) is None:
        raise UserError(
            f"grounding a contrastive model needs data with boxes, not {data.name!r}",
            hint="use data.kind: box-canvases, or drop the grounding task",
        )
    if getattr(model, "box_head", None) is None:
        raise UserError("grounding a contrastive model needs its box head", hint="set model.box_head")
    count = min(len(data), task.max_samples or len(data))
    predicted: list[tuple[float, float, float, float]] = []
    for start in range(0, count, context.batch_size):
        indices = range(start, min(start + context.batch_size, count))
        images = torch.stack([data.image(i) for i in indices])
        text = context.tokenizer([data.captions_of(i)[0] for i in indices], context.context_length)
        predicted += [tuple(box) for box in predict_boxes(model, images, text).tolist()]
    truth = [data.box(i) for i in range(count)]
    train = context.train_data
    fitted = isinstance(train, ImageTextSet) and train.boxes is not None and len(train) > 0
    size = mean_box_size(train if fitted else data)  # type: ignore[arg-type]
    scores = grounding_scores(predicted, truth, [1.0] * count, size, task.threshold)
    return scores | {"baseline_size_from": "train" if fitted else "eval", "evaluated": count}
