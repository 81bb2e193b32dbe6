"""Referring-expression grounding metrics as pure functions: box IoU and accuracy at an IoU threshold, the
RefCOCO protocol (Kazemzadeh et al. 2014; Mao et al. 2016) as LLaVA-1.5 and Shikra report it."""

from __future__ import annotations

import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})")


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """(x, y, width, height), as COCO/RefCOCO annotations store boxes -> (x1, y1, x2, y2)."""
    x, y, width, height = box
    return (float(x), float(y), float(x + width), float(y + height))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes in continuous coordinates (no +1 pixel), as
    torchvision.ops.box_iou computes it; 0 where the union is empty (torchvision gives NaN there)."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def parse_box(text: str) -> Box | None:
    """The first four numbers of a "[x1, y1, x2, y2]" answer, the form LLaVA-1.5 and Shikra give for a
    referring expression (LLaVA-1.5 as fractions of the padded square image); None without one."""
    found = _BOX.search(text)
    return None if found is None else (float(found[1]), float(found[2]), float(found[3]), float(found[4]))


def grounding_accuracy(
    predicted: Sequence[Sequence[float] | None], truth: Sequence[Sequence[float]], threshold: float = 0.5
) -> dict[str, float]:
    """RefCOCO accuracy (a box is right when its IoU with the truth is >= ``threshold``), keyed
    ``accuracy@<threshold>``, and the mean IoU; a missing (unparseable) box has IoU 0."""
    ious = [0.0 if box is None else box_iou(box, true) for box, true in zip(predicted, truth, strict=True)]
    hits = [iou >= threshold for iou in ious]
    return {f"accuracy@{threshold:g}": _mean(hits), "mean_iou": _mean(ious)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
