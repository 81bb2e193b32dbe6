"""Kosmos-2 location tokens (Peng et al. 2023): a box, as fractions of the image, is written as the cells
of a P x P grid holding its top-left and bottom-right corners, ``<box><loc_a><loc_b></box>`` with cells
numbered row by row; the tokens are added to the vocabulary, so a language model answers a referring
expression with a box in three tokens. Quantisation and decoding follow microsoft/unilm's Kosmos-2
(``coordinate_to_patch_index`` and ``decode_string.py``'s ``patch_index_to_coordinate``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

BOX_OPEN, BOX_CLOSE = "<box>", "</box>"
_ANSWER = re.compile(r"<box>\s*<loc_(\d+)>\s*<loc_(\d+)>\s*</box>")
_MARKUP = re.compile(r"</?box>|<loc_\d+>")

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


def location_token(cell: int) -> str:
    return f"<loc_{cell}>"


def location_vocabulary(bins: int) -> list[str]:
    """The tokens a P x P grid adds: ``<box>``, ``</box>`` and one ``<loc_i>`` per cell."""
    return [BOX_OPEN, BOX_CLOSE, *(location_token(cell) for cell in range(bins * bins))]


def box_to_cells(box: Sequence[float], bins: int) -> tuple[int, int]:
    """(top-left cell, bottom-right cell) of a box in fractions of the image, x2 > x1 and y2 > y1: the
    cell holding (x1, y1) and the one holding (x2, y2) with a right or bottom edge on a cell border
    counted in the cell before it (Kosmos-2's ``coordinate_to_patch_index``); clipped to the grid."""
    x1, y1, x2, y2 = box

    def clip(value: int) -> int:
        return min(max(value, 0), bins - 1)

    left, top = clip(math.floor(x1 * bins)), clip(math.floor(y1 * bins))
    right, bottom = clip(math.ceil(x2 * bins - 1)), clip(math.ceil(y2 * bins - 1))
    return top * bins + left, bottom * bins + right


def cells_to_box(top_left: int, bottom_right: int, bins: int) -> Box:
    """The box (fractions of the image) two cells stand for, as Kosmos-2 decodes them: from cell centre
    to cell centre, except that the whole cells are covered when both corners share a row or a column
    (a box one cell thick would otherwise have no area)."""
    cell = 1.0 / bins
    left, top = top_left % bins, top_left // bins
    right, bottom = bottom_right % bins, bottom_right // bins
    if left == right or top == bottom:
        return (left * cell, top * cell, (right + 1) * cell, (bottom + 1) * cell)
    half = cell / 2
    return (left * cell + half, top * cell + half, right * cell + half, bottom * cell + half)


def box_answer(box: Sequence[float], bins: int) -> str:
    """The answer text of a box in fractions of the image: ``<box><loc_a><loc_b></box>``."""
    top_left, bottom_right = box_to_cells(box, bins)
    return f"{BOX_OPEN}{location_token(top_left)}{location_token(bottom_right)}{BOX_CLOSE}"


def parse_box_answer(text: str, bins: int) -> Box | None:
    """The box (fractions of the image) of the first ``<box><loc_a><loc_b></box>`` in ``text``; None
    without one, or when a cell is outside the P x P grid or below-left of the other."""
    found = _ANSWER.search(text)
    if found is None:
        return None
    top_left, bottom_right = int(found[1]), int(found[2])
    if max(top_left, bottom_right) >= bins * bins:
        return None
    x1, y1, x2, y2 = cells_to_box(top_left, bottom_right, bins)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def without_location_markup(text: str) -> str:
    """``text`` with the box and location tokens removed: what a vocabulary is built from (the tokens
    themselves are added whole by ``add_location_tokens``)."""
    return _MARKUP.sub(" ", text)


def add_location_tokens(tokenizer: Any, bins: int) -> int:
    """Add the P x P grid's tokens to a transformers tokenizer as whole, non-special tokens (they are
    matched before any splitting and kept when answers are decoded); returns how many were new."""
    return int(tokenizer.add_tokens(location_vocabulary(bins)))


def location_grids(sources: Iterable[Any]) -> list[int]:
    """The grid sides P the data sources answer boxes on (their ``location_bins``), each once."""
    return sorted({int(source.location_bins) for source in sources if hasattr(source, "location_bins")})


def added_vocabulary(sources: Iterable[Any]) -> int:
    """How many location tokens the data sources' grids add to a vocabulary."""
    return len({token for bins in location_grids(sources) for token in location_vocabulary(bins)})
