"""Kosmos-2 location tokens: quantisation, decoding, answers and the tokenizers that carry them."""

from __future__ import annotations

import pytest

from vlmforge.data.conversations import build_tokenizer
from vlmforge.data.locations import (
    add_location_tokens,
    added_vocabulary,
    box_answer,
    box_to_cells,
    cells_to_box,
    location_grids,
    location_vocabulary,
    parse_box_answer,
    without_location_markup,
)

# (P, box, (top-left cell, bottom-right cell), decoded box): computed once with transformers 5.24.0's port of
# microsoft/unilm's Kosmos-2 code, transformers/models/kosmos2/processing_kosmos2.py,
# coordinate_to_patch_index(box, P) and patch_index_to_coordinate(ul, lr, P) (the latter copied there from
# unilm commit 97e4923e, kosmos-2/demo/decode_string.py).
KOSMOS2 = [
    (8, (0.0, 0.0, 1.0, 1.0), (0, 63), (0.0625, 0.0625, 0.9375, 0.9375)),
    (8, (0.34375, 0.0, 0.71875, 0.375), (2, 21), (0.3125, 0.0625, 0.6875, 0.3125)),
    (8, (0.1, 0.2, 0.15, 0.9), (8, 57), (0.0625, 0.1875, 0.1875, 0.9375)),
    (8, (0.5, 0.5, 0.75, 0.75), (36, 45), (0.5625, 0.5625, 0.6875, 0.6875)),
    (8, (0.26, 0.61, 0.99, 0.98), (34, 63), (0.3125, 0.5625, 0.9375, 0.9375)),
    (8, (0.1, 0.2, 0.12, 0.9), (8, 56), (0.0, 0.125, 0.125, 1.0)),
    (8, (0.3, 0.3, 0.35, 0.35), (18, 18), (0.25, 0.25, 0.375, 0.375)),
    (8, (0.05, 0.4, 0.9, 0.45), (24, 31), (0.0, 0.375, 1.0, 0.5)),
    (32, (0.0, 0.0, 1.0, 1.0), (0, 1023), (0.015625, 0.015625, 0.984375, 0.984375)),
    (32, (0.34375, 0.0, 0.71875, 0.375), (11, 374), (0.359375, 0.015625, 0.703125, 0.359375)),
    (32, (0.1, 0.2, 0.15, 0.9), (195, 900), (0.109375, 0.203125, 0.140625, 0.890625)),
    (32, (0.5, 0.5, 0.75, 0.75), (528, 759), (0.515625, 0.515625, 0.734375, 0.734375)),
    (32, (0.26, 0.61, 0.99, 0.98), (616, 1023), (0.265625, 0.609375, 0.984375, 0.984375)),
]


@pytest.mark.parametrize(("bins", "box", "cells", "decoded"), KOSMOS2)
def test_cells_and_boxes_as_kosmos2(bins: int, box: tuple, cells: tuple, decoded: tuple) -> None:
    assert box_to_cells(box, bins) == cells
    assert cells_to_box(*cells, bins) == pytest.approx(decoded)
    assert parse_box_answer(box_answer(box, bins), bins) == pytest.approx(decoded)


def test_answers_read_back_or_refused() -> None:
    assert box_answer((0.34375, 0.0, 0.71875, 0.375), 8) == "<box><loc_2><loc_21></box>"
    assert parse_box_answer("<box> <loc_2> <loc_21> </box> </s>", 8) == pytest.approx(
        (0.3125, 0.0625, 0.6875, 0.3125)
    )
    assert parse_box_answer("<box><loc_64><loc_2></box>", 8) is None  # outside an 8 x 8 grid
    assert parse_box_answer("<box><loc_21><loc_2></box>", 8) is None  # corners swapped: no area
    assert parse_box_answer("the seven", 8) is None
    assert box_to_cells((-0.1, 0.5, 1.2, 0.9), 8)[0] == 32  # clipped to the grid
    assert without_location_markup("<box><loc_2><loc_21></box>").split() == []


def test_grids_and_added_vocabulary() -> None:
    class Source:
        def __init__(self, bins: int) -> None:
            self.location_bins = bins

    sources = [Source(8), object(), Source(4), Source(8)]
    assert location_grids(sources) == [4, 8]
    assert added_vocabulary(sources) == 2 + 64  # <box>, </box>; the 4 x 4 cells are among the 8 x 8's
    assert len(location_vocabulary(32)) == 2 + 1024


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_tokenizers_keep_location_tokens_whole(kind: str) -> None:
    texts = ["USER:", "ASSISTANT:", "where is the seven on the left?"] * 20
    tokenizer = build_tokenizer(kind, texts, vocab_size=300)
    before = len(tokenizer)
    assert add_location_tokens(tokenizer, 8) == 66
    assert len(tokenizer) == before + 66
    answer = box_answer((0.34375, 0.0, 0.71875, 0.375), 8)
    ids = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"]  # as answers are encoded
    # the byte-level BPE keeps the leading space as a token of its own; the word vocabulary drops it
    assert tokenizer.convert_ids_to_tokens(ids)[-4:] == ["<box>", "<loc_2>", "<loc_21>", "</box>"]
    assert len(ids) == (5 if kind == "bpe" else 4)
    decoded = tokenizer.decode([*ids, tokenizer.eos_token_id], skip_special_tokens=True)
    assert parse_box_answer(decoded, 8) == pytest.approx((0.3125, 0.0625, 0.6875, 0.3125))
