"""Text spotting: the MSER line verification, and the shipped recipe's text step on the held-out half of
the labelled text-dominated / natural image set (tests/text_images.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.text_images import NATURAL, TEXT, labelled_images, split_halves
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.curate.textdetect import (
    baseline_residuals,
    build_detector,
    is_text_line,
    side_by_side,
    text_area,
)


def boxes_on(slope: float, bottoms_jitter: list[float]) -> np.ndarray:
    """Character boxes (x, y, w, h, stroke) 20 px tall, 16 px apart, bottoms on y = 100 + slope * x."""
    rows = []
    for i, jitter in enumerate(bottoms_jitter):
        x = 16.0 * i
        bottom = 100 + slope * (x + 6) + jitter
        rows.append((x, bottom - 20, 12, 20, 2))
    return np.array(rows, dtype=np.float64)


def test_baseline_residuals_follow_a_slanted_baseline() -> None:
    tops, bottoms = baseline_residuals(boxes_on(0.3, [0, 0, 0, 0, 0]))
    np.testing.assert_allclose(bottoms, 0, atol=1e-9)
    np.testing.assert_allclose(tops, -20, atol=1e-9)


def test_a_line_on_one_baseline_is_text_horizontal_or_slanted() -> None:
    assert is_text_line(boxes_on(0.0, [0, 0, 0, 0, 0]))
    assert is_text_line(boxes_on(0.25, [0, 1, 0, 0, -1]))  # about 14 degrees, a pixel of rounding


def test_scattered_bottoms_are_not_a_text_line() -> None:
    assert not is_text_line(boxes_on(0.0, [0, 6, -5, 7, -6]))  # a texture's blobs: no common baseline


def test_a_line_taller_than_its_characters_is_not_text() -> None:
    boxes = boxes_on(0.0, [0, 0, 0, 0, 0])
    boxes[2, 1] -= 40  # one region reaching far above the line
    boxes[2, 3] += 40
    assert not is_text_line(boxes)


def test_solid_blobs_are_not_a_text_line() -> None:
    boxes = boxes_on(0.0, [0, 0, 0, 0, 0])
    boxes[:, 4] = 5  # strokes 10 px wide in 12 px wide regions: bricks, not letters
    assert not is_text_line(boxes)


def test_nested_regions_of_one_glyph_count_once() -> None:
    glyphs = boxes_on(0.0, [0, 0, 0])
    nested = glyphs[1] + np.array([1, 1, -2, -2, 0])  # MSER's inner region of the middle glyph
    found = side_by_side(np.vstack([glyphs, nested]))
    np.testing.assert_array_equal(found[:, 0], [0, 16, 32])


@pytest.fixture(scope="module")
def held_out() -> list:
    _, check = split_halves(labelled_images(seed=0))
    return check


def test_shipped_recipe_drops_text_dominated_images_and_keeps_photos(held_out: list) -> None:
    """The targets of benchmarks/text_spotting.py: >= 90% of text-dominated images dropped, >= 95% of
    natural ones (photos, crops, flips, rescalings, small watermarks) kept, on the half not used to
    pick the threshold."""
    recipe = load_recipe("curate", find_recipe("curate/datacomp-metaclip"))
    step = next(s for s in recipe.steps if s.kind == "text_spotting")
    detect = build_detector(step.detector)
    dropped = {TEXT: [], NATURAL: []}
    for row in held_out:
        pixels = np.asarray(row.image)
        area = text_area(detect(pixels), pixels.shape[1], pixels.shape[0])
        dropped[row.label].append(area > step.max_text_area)
    assert len(dropped[TEXT]) >= 30 and len(dropped[NATURAL]) >= 30
    assert np.mean(dropped[TEXT]) >= 0.90
    assert 1 - np.mean(dropped[NATURAL]) >= 0.95
