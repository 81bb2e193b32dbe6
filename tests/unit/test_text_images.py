"""Rendered text canvases (seeded words, boxes, questions) and the Lumos-style OCR prompt: reading
order, the words' line, words from the data or from a reader read once per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlmforge.config.schema import LlavaJsonData, TextImagesConversations
from vlmforge.config.text_images import OcrPrompt
from vlmforge.data.conversation_set import IMAGE
from vlmforge.data.conversations import open_conversations, split_conversations
from vlmforge.data.ocr_prompt import CachedReader, format_words, prompt_turns, reading_order
from vlmforge.data.text_images import render, text_canvases, text_image_conversations
from vlmforge.errors import UserError

SMALL = {"count": 30, "canvas_size": 64}


def test_canvases_are_a_function_of_the_seed() -> None:
    first, again = (
        text_canvases(TextImagesConversations(**SMALL)),
        text_canvases(TextImagesConversations(**SMALL)),
    )
    assert first == again
    assert [render(c, 64).tobytes() for c in first] == [render(c, 64).tobytes() for c in again]
    other = text_canvases(TextImagesConversations(**SMALL, seed=1))
    assert [c.words for c in other] != [c.words for c in first]


def test_each_answer_is_the_drawn_word_the_question_asks_for() -> None:
    canvases = text_canvases(TextImagesConversations(count=200))
    asked = {c.question for c in canvases}
    assert {"What word is written?", "What number is on the sign?", "What word is at the top?"} <= asked
    for c in canvases:
        texts = [w.text for w in c.words]
        assert c.answer in texts
        if "sign" in c.question:
            (sign,) = [w for w in c.words if w.on_sign]
            assert c.answer == sign.text and sign.text.isdigit() and 10 <= int(sign.text) < 100
        elif "top" in c.question or "bottom" in c.question:
            top, bottom = sorted(c.words, key=lambda w: w.box[1])
            assert top.box[3] <= bottom.box[1]  # one above the other, not side by side
            assert c.answer == (top.text if "top" in c.question else bottom.text)
        else:
            assert len(c.words) == 1


def test_boxes_are_the_ink_extent_of_each_word() -> None:
    for canvas in text_canvases(TextImagesConversations(**SMALL))[:12]:
        pixels = render(canvas, 64)[:, :, 0].astype(int)
        for word in canvas.words:
            x0, y0, x1, y1 = word.box
            if word.on_sign:  # the sign's plate is drawn in ink around the number, 2 pixels wide
                assert (pixels[y0 - 2, x0 - 2 : x1 + 2] == canvas.ink[0]).all()
                continue
            top, left = max(y0 - 3, 0), max(x0 - 3, 0)
            around = pixels[top : y1 + 3, left : x1 + 3] != canvas.background[0]
            ink = np.add(np.argwhere(around), [top, left])
            (iy0, ix0), (iy1, ix1) = ink.min(0), ink.max(0) + 1
            assert y0 <= iy0 <= y0 + 1 and x0 <= ix0 <= x0 + 1  # the box holds all the ink, tightly
            assert y1 - 1 <= iy1 <= y1 and x1 - 1 <= ix1 <= x1


def test_reading_order_is_lines_top_to_bottom_then_left_to_right() -> None:
    words = [
        ("world", (0.55, 0.12, 0.9, 0.22)),  # same line as "hello", its top a little lower
        ("exit", (0.7, 0.6, 0.9, 0.7)),
        ("hello", (0.1, 0.1, 0.5, 0.2)),
        ("bottom", (0.05, 0.8, 0.4, 0.9)),
        ("left", (0.1, 0.62, 0.3, 0.72)),
    ]
    assert [t for t, _ in reading_order(words)] == ["hello", "world", "left", "exit", "bottom"]
    assert reading_order([]) == []


def test_the_words_line_follows_the_image_in_the_first_question() -> None:
    words = [("42", (0.5, 0.6, 0.7, 0.72)), ("stop", (0.1, 0.2, 0.4, 0.31))]
    assert format_words(reading_order(words), boxes=True) == "stop [10, 20, 40, 31], 42 [50, 60, 70, 72]"
    assert format_words(reading_order(words), boxes=False) == "stop, 42"
    turns = [
        ("human", f"{IMAGE}\nWhat number is on the sign?"),
        ("gpt", "42"),
        ("human", "And?"),
        ("gpt", "no"),
    ]
    prompted = prompt_turns(turns, words, OcrPrompt(boxes=False))
    assert prompted[0] == ("human", f"{IMAGE}\nText in the image: stop, 42\nWhat number is on the sign?")
    assert prompted[1:] == turns[1:]
    one = prompt_turns(turns, words, OcrPrompt(max_words=1, template="OCR: {}"))
    assert one[0][1] == f"{IMAGE}\nOCR: stop [10, 20, 40, 31]\nWhat number is on the sign?"
    assert prompt_turns(turns, [], OcrPrompt())[0][1].startswith(f"{IMAGE}\nText in the image: none\n")
    with pytest.raises(ValueError, match="exactly one"):
        OcrPrompt(template="no slot")


def test_oracle_words_are_the_drawn_ones() -> None:
    cfg = TextImagesConversations(**SMALL, ocr_prompt={"words": "data", "boxes": False})
    data = text_image_conversations(cfg, 32)
    for i, canvas in enumerate(text_canvases(cfg)):
        ordered = sorted(canvas.words, key=lambda w: w.box[1])
        line = data.turns(i)[0][1].split("\n")[1]
        assert line == "Text in the image: " + ", ".join(w.text for w in ordered)


def test_reader_words_are_read_once_per_canvas_and_only_when_asked_for() -> None:
    calls: list[tuple[int, ...]] = []

    def fake_reader(rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], str]]:
        calls.append(rgb.shape)
        return [((32, 16, 64, 32), "right"), ((0, 16, 16, 32), "left")]

    cfg = TextImagesConversations(**SMALL, ocr_prompt={"words": "reader"})
    data = text_image_conversations(cfg, 32, reader=fake_reader)
    held_out = data.subset(np.arange(25, 30), "val")
    assert (
        held_out.turns(0)[0][1].split("\n")[1]
        == "Text in the image: left [0, 25, 25, 50], right [50, 25, 100, 50]"
    )
    held_out.turns(0), held_out.turns(1)
    assert calls == [(64, 64, 3), (64, 64, 3)]  # one read per canvas, none for canvases not asked for


def test_cache_dir_keeps_reads_across_readers(tmp_path: Path) -> None:
    calls = []

    def fake_reader(rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], str]]:
        calls.append(1)
        return [((1, 2, 3, 4), "cafe")]

    cfg = OcrPrompt(words="reader", cache_dir=tmp_path / "cache")
    image = np.zeros((10, 20, 3), np.uint8)
    assert CachedReader(cfg, fake_reader).read(image) == [("cafe", (0.05, 0.2, 0.15, 0.4))]
    assert CachedReader(cfg, fake_reader).read(image) == [("cafe", (0.05, 0.2, 0.15, 0.4))]
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    CachedReader(cfg, fake_reader).read(image + 1)  # other pixels: read again
    assert len(calls) == 2
    nothing = OcrPrompt(words="reader", cache_dir=tmp_path / "empty")
    assert CachedReader(nothing, lambda rgb: []).read(image) == []
    assert CachedReader(nothing, fake_reader).read(image) == []  # 'no words' is a cached answer too
    assert len(calls) == 2


def write_json(folder: Path, entries: list[dict]) -> Path:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    Image.new("RGB", (200, 100)).save(folder / "a.png")
    path = folder / "data.json"
    path.write_text(json.dumps(entries))
    return path


def test_llava_json_words_come_from_each_entry(tmp_path: Path) -> None:
    entry = {
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "What does it say?"},
            {"from": "gpt", "value": "open late"},
        ],
        "ocr": [{"text": "late", "box": [120, 40, 180, 60]}, {"text": "open", "box": [20, 42, 100, 58]}],
    }
    path = write_json(tmp_path, [entry, {**entry, "ocr": []}])
    data = open_conversations(LlavaJsonData(path=path, ocr_prompt={}), 16)
    assert data.turns(0)[0][1] == (
        f"{IMAGE}\nText in the image: open [10, 42, 50, 58], late [60, 40, 90, 60]\nWhat does it say?"
    )
    assert data.turns(1)[0][1] == f"{IMAGE}\nText in the image: none\nWhat does it say?"
    train, val = split_conversations(LlavaJsonData(path=path, ocr_prompt={}, val_fraction=0.5), 16)
    assert "Text in the image:" in train.turns(0)[0][1] and "Text in the image:" in val.turns(0)[0][1]


@pytest.mark.parametrize(
    ("ocr", "message"),
    [
        (None, r"entry 0: 'ocr' must be a list"),
        ([{"text": "a", "box": [1, 2, 3]}], r"entry 0: ocr\[0\] needs 'text'"),
        ([{"text": 5, "box": [1, 2, 3, 4]}], r"entry 0: ocr\[0\] needs 'text'"),
    ],
)
def test_bad_ocr_lists_name_the_file_and_entry(tmp_path: Path, ocr: object, message: str) -> None:
    entry = {
        "image": "a.png",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    path = write_json(tmp_path, [entry if ocr is None else {**entry, "ocr": ocr}])
    with pytest.raises(UserError, match=message) as info:
        open_conversations(LlavaJsonData(path=path, ocr_prompt={"words": "data"}), 16)
    assert str(path) in info.value.message and "words: reader" in (info.value.hint or "")


def test_font_sizes_must_fit_the_canvas() -> None:
    with pytest.raises(ValueError, match="no room for three lines"):
        TextImagesConversations(canvas_size=32, font_sizes=(9, 13))
    with pytest.raises(ValueError, match="smallest <= largest"):
        TextImagesConversations(font_sizes=(12, 9))


def test_an_unreadable_image_is_named_when_its_words_are_read(tmp_path: Path) -> None:
    entry = {
        "image": "a.png",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    path = write_json(tmp_path, [entry])
    (tmp_path / "a.png").write_bytes(b"not a png")
    data = open_conversations(LlavaJsonData(path=path, ocr_prompt={"words": "reader"}), 16)
    with pytest.raises(UserError, match=r"a\.png: cannot read the image for OCR"):
        data.turns(0)
