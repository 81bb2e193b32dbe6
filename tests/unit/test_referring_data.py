"""Referring-expression data: the offline canvases (exact boxes, expressions that single out one object,
held-out canvases on held-out digits) and RefCOCO-style JSON read as conversations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.llava_benchmark_files import write_refcoco
from vlmforge.config.schema import ReferringCanvases, ReferringJsonData
from vlmforge.data.canvases import Placed, _expression
from vlmforge.data.conversations import split_conversations
from vlmforge.data.locations import box_answer
from vlmforge.data.referring import ReferringSet, from_square_fractions, to_square_fractions
from vlmforge.errors import UserError

SMALL = {"count": 60, "canvas_size": 32, "location_bins": 8}


@pytest.fixture(scope="module")
def canvases() -> tuple[ReferringSet, ReferringSet]:
    train, val = split_conversations(ReferringCanvases(**SMALL), 32)
    assert isinstance(train, ReferringSet) and isinstance(val, ReferringSet)
    return train, val


def _pixels(data: ReferringSet, i: int) -> np.ndarray:
    """[H, W, 3] of image i in [0, 1] (the canvases' mean and std are 0.5)."""
    return (data.image(i) * 0.5 + 0.5).permute(1, 2, 0).numpy()


def test_canvases_split_and_answers(canvases: tuple[ReferringSet, ReferringSet]) -> None:
    train, val = canvases
    assert (len(train), len(val)) == (48, 12)
    for data in canvases:
        for i in range(len(data)):
            question, answer = data.turns(i)
            assert question[1].startswith("<image>\nWhere is the ") and question[1].endswith("?")
            assert answer == ("gpt", box_answer(data.box(i), 8))
            x1, y1, x2, y2 = data.box(i)
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and data.side(i) == 32
            assert 8 <= round((x2 - x1) * 32) == round((y2 - y1) * 32) <= 12


def test_the_box_holds_the_object(canvases: tuple[ReferringSet, ReferringSet]) -> None:
    """A shape touches every side of its box; nothing else is drawn inside it."""
    train, _ = canvases
    shapes = [
        i
        for i in range(len(train))
        if re.search(r"(red|green|blue) (square|circle|triangle)\b", train.turns(i)[0][1])
    ]
    checked = 0
    for i in shapes:
        expression = train.turns(i)[0][1].split("Where is the ")[1]
        if not re.match(r"(red|green|blue) (square|circle|triangle)\b", expression):
            continue
        colour = expression.split()[0]
        channel = {"red": 0, "green": 1, "blue": 2}[colour]
        x1, y1, x2, y2 = (round(v * 32) for v in train.box(i))
        inside = _pixels(train, i)[y1:y2, x1:x2, channel] > 0.9
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        checked += 1
    assert checked >= 5


def test_same_seed_same_canvases_other_seed_others() -> None:
    a, _ = split_conversations(ReferringCanvases(**SMALL), 32)
    b, _ = split_conversations(ReferringCanvases(**SMALL), 32)
    c, _ = split_conversations(ReferringCanvases(**SMALL, seed=1), 32)
    assert a.images.fingerprint == b.images.fingerprint != c.images.fingerprint
    assert torch.equal(a.image(3), b.image(3)) and a.turns(3) == b.turns(3)


def test_expressions_single_out_the_object() -> None:
    seven_left = Placed("seven", (2, 2, 10, 10), digit=0)
    seven_right = Placed("seven", (20, 4, 28, 12), digit=1)
    square = Placed("red square", (5, 20, 13, 28), shape="square", colour="red")
    circle = Placed("blue circle", (18, 18, 28, 28), shape="circle", colour="blue")
    rng = np.random.default_rng(0)
    assert _expression([seven_left, seven_right, square], 0, rng) == "the seven on the left"
    assert _expression([seven_left, seven_right, square], 1, rng) == "the seven on the right"
    stacked = [Placed("seven", (2, 2, 10, 10)), Placed("seven", (3, 20, 11, 28))]
    assert _expression(stacked, 1, rng) == "the seven at the bottom"
    said = {_expression([square, circle], 0, np.random.default_rng(seed)) for seed in range(20)}
    assert said == {"the red square", "the red square left of the circle"}  # circle: the only circle


def test_held_out_canvases_use_held_out_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    from vlmforge.data import canvases as module
    from vlmforge.data.base import split_indices

    layouts: list[list[Placed]] = []
    original = module._layout

    def recording(*args: object) -> list[Placed]:
        layouts.append(original(*args))  # type: ignore[arg-type]
        return layouts[-1]

    monkeypatch.setattr(module, "_layout", recording)
    cfg = ReferringCanvases(**SMALL, objects="digits")
    module.canvas_set(cfg, 16)
    held_out = set(split_indices(cfg.count, None, cfg.val_fraction)[1].tolist())
    used: dict[bool, set[int]] = {True: set(), False: set()}
    for n, placed in enumerate(layouts):
        used[n in held_out] |= {p.digit for p in placed if p.digit is not None}
    digits = load_digits()
    train_digits, val_digits = split_indices(len(digits.images), digits.target, 0.2)
    assert used[True] and used[True] <= set(val_digits.tolist())
    assert used[False] and used[False] <= set(train_digits.tolist())


def test_canvas_sizes_checked() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        ReferringCanvases(canvas_size=16, max_object=12)
    with pytest.raises(ValueError, match="exactly one"):
        ReferringCanvases(prompt="Where is it?")


# ------------------------------------------------------------------------------- RefCOCO-style JSON
def _refcoco(root: Path) -> Path:
    return write_refcoco(root)  # the refcoco benchmark's test layout: two photos, boxes in xywh


def test_refcoco_json_as_conversations(tmp_path: Path) -> None:
    from PIL import Image

    path = _refcoco(tmp_path)
    cfg = ReferringJsonData(path=path, val_fraction=0.0, location_bins=8)
    train, val = split_conversations(cfg, 32)
    assert isinstance(train, ReferringSet) and len(train) == 2 and len(val) == 0
    size = Image.open(tmp_path / "cup.jpg").size
    side = max(size)
    fractions = to_square_fractions((4.0, 14.0, 44.0, 50.0), size)  # [4, 14, 40, 36] in xywh
    assert train.box(1) == pytest.approx(fractions) and train.side(1) == side
    assert from_square_fractions(train.box(1), size) == pytest.approx((4.0, 14.0, 44.0, 50.0))
    assert train.turns(1) == [
        ("human", "<image>\nWhere is the coffee cup?"),
        ("gpt", box_answer(fractions, 8)),
    ]
    assert train.image(0).shape == (3, 32, 32)


def test_refcoco_json_errors(tmp_path: Path) -> None:
    path = _refcoco(tmp_path)
    refs = json.loads(path.read_text())
    refs[1]["box"] = [4, 14, 0, 36]
    path.write_text(json.dumps(refs))
    with pytest.raises(UserError, match=r"refs\.json: entry 1: 'box' must be \[x, y, w, h\]"):
        split_conversations(ReferringJsonData(path=path), 32)
    path.write_text(json.dumps([{"image": "gone.jpg", "expression": "a cat", "box": [1, 2, 3, 4]}]))
    with pytest.raises(UserError, match=r"1 image file\(s\) listed but missing: .*gone\.jpg"):
        split_conversations(ReferringJsonData(path=path), 32)
    path.write_text("[{")
    with pytest.raises(UserError, match="not valid JSON"):
        split_conversations(ReferringJsonData(path=path), 32)
