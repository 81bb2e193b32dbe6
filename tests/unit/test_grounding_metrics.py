"""Grounding metrics: box IoU against torchvision.ops.box_iou, parsing and RefCOCO accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou as torchvision_box_iou

from vlmforge.evaluate.grounding_metrics import box_iou, grounding_accuracy, parse_box, xywh_to_xyxy


def _torchvision(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(
        torchvision_box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    )


def test_iou_matches_torchvision_on_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(400, 2, 2, generator=generator, dtype=torch.float64) * 100
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    expected = torchvision_box_iou(boxes[:200], boxes[200:]).diagonal()
    ours = [box_iou(a.tolist(), b.tolist()) for a, b in zip(boxes[:200], boxes[200:], strict=True)]
    assert 0 < sum(iou > 0 for iou in ours) < 200  # both overlapping and disjoint pairs are covered
    assert ours == pytest.approx(expected.tolist(), abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((0, 0, 10, 10), (20, 20, 30, 30)),  # apart
        ((0, 0, 10, 10), (10, 0, 20, 10)),  # touching edges
        ((0, 0, 10, 10), (10, 10, 20, 20)),  # touching corners
        ((0, 0, 10, 10), (0, 0, 10, 10)),  # identical
        ((0, 0, 10, 10), (2, 2, 5, 5)),  # nested
        ((0, 0, 10, 10), (5, 5, 5, 9)),  # zero-area box inside
        ((0.5, 0.25, 1.5, 2.0), (1.0, 0.0, 3.0, 1.0)),  # fractional overlap
    ],
)
def test_degenerate_boxes_match_torchvision(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    assert box_iou(a, b) == pytest.approx(_torchvision(a, b), abs=1e-12)
    assert box_iou(b, a) == pytest.approx(_torchvision(a, b), abs=1e-12)


def test_empty_union_is_zero_where_torchvision_gives_nan() -> None:
    assert math.isnan(_torchvision((3, 3, 3, 3), (3, 3, 3, 3)))
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0


def test_xywh_to_xyxy() -> None:
    assert xywh_to_xyxy([10, 20, 30, 5.5]) == (10.0, 20.0, 40.0, 25.5)


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("[0.12, 0.34, 0.56, 0.78]", (0.12, 0.34, 0.56, 0.78)),
        ("The dog is at [0.123,0.456,0.789,0.999].", (0.123, 0.456, 0.789, 0.999)),
        ("[ 12, 30 ,40,  52 ]", (12.0, 30.0, 40.0, 52.0)),
        ("[.5, 1., 2, 3, 4]", (0.5, 1.0, 2.0, 3.0)),
        ("first [1, 2] then [0.1, 0.2, 0.3, 0.4] and [5, 6, 7, 8]", (0.1, 0.2, 0.3, 0.4)),
        ("0.1, 0.2, 0.3, 0.4", None),
        ("[0.1, 0.2, 0.3]", None),
        ("a dog on the left", None),
    ],
)
def test_parse_box(text: str, box: tuple[float, ...] | None) -> None:
    assert parse_box(text) == box


def test_grounding_accuracy_counts_missing_boxes_as_zero() -> None:
    truth = [(0, 0, 10, 10)] * 4
    predicted = [(0, 0, 10, 10), (0, 0, 10, 5), (0, 0, 10, 4), None]  # IoU 1, 0.5, 0.4, none
    assert grounding_accuracy(predicted, truth) == pytest.approx({"accuracy@0.5": 0.5, "mean_iou": 1.9 / 4})
    assert grounding_accuracy(predicted, truth, threshold=0.75) == pytest.approx(
        {"accuracy@0.75": 0.25, "mean_iou": 1.9 / 4}
    )
    assert grounding_accuracy([], []) == {"accuracy@0.5": 0.0, "mean_iou": 0.0}
