"""The OCR text detector of `vlmforge curate` (EasyOCR, the `ocr` extra): reading rendered captions back,
dropping captions that transcribe the image's text, T-MARS masking with OCR boxes, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from tests.curate_pool import digit, photo, recipe_of, rendered_text
from vlmforge.config.curate_models import OcrDetector
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Chunk
from vlmforge.curate.scoring import caption_overlap, content_words
from vlmforge.curate.steps import build_steps

pytest.importorskip("easyocr", reason="the ocr extra: pip install 'vlmforge[ocr]'")

OCR = {"kind": "ocr"}
SPOTTING = {"kind": "text_spotting", "max_text_area": None, "max_caption_overlap": 0.5, "detector": OCR}


@pytest.fixture(scope="module")
def reader() -> Any:
    from vlmforge.curate.textdetect import build_detector

    return build_detector(OcrDetector())


def test_caption_overlap_counts_content_words_read_in_the_image() -> None:
    assert content_words("Welcome to THE Grand-Hotel, 2024!") == {"welcome", "grand", "hotel", "2024"}
    assert caption_overlap("welcome to the grand hotel", ["WELCOME tc", "the grand"]) == pytest.approx(2 / 3)
    assert caption_overlap("a cup of coffee", ["grand hotel"]) == 0.0
    assert caption_overlap("to the of", ["to the of"]) == 0.0  # no content words: nothing to transcribe


def test_ocr_reads_a_rendered_caption_back_and_nothing_on_digits_or_photos(reader: Any) -> None:
    caption = "welcome to the grand hotel"
    poster = rendered_text(caption)
    reads = reader.read(np.asarray(poster))
    assert caption_overlap(caption, [text for _, text in reads]) >= 0.6
    for (x0, y0, x1, y1), _ in reads:
        assert 0 <= x0 < x1 <= poster.width and 0 <= y0 < y1 <= poster.height
    assert reader(np.asarray(poster)) == [box for box, _ in reads]  # the boxes alone, for masking
    for image in (digit(), photo("coffee"), photo("moon")):
        assert reader.read(np.asarray(image)) == []


def test_clip_score_masks_the_boxes_ocr_finds(tmp_path: Path, reader: Any) -> None:
    """T-MARS with OCR boxes: the poster's text is masked before scoring, text-free images are not."""

    class Recorder:  # stands in for the scoring model: keeps the images it is asked to embed
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def images(self, images: list[Any]) -> np.ndarray:
            self.seen = images
            return np.ones((len(images), 4), dtype=np.float32) / 2

        def texts(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 4), dtype=np.float32) / 2

    step = {"kind": "clip_score", "threshold": 0.0, "mask_text": True, "detector": OCR}
    recipe = recipe_of(tmp_path, [step], model={"kind": "run", "path": "unused"})
    resources = Resources(recipe)
    resources._scorer = Recorder()
    resources._detectors[recipe.steps[0].detector.model_dump_json()] = reader  # reuse the loaded reader
    (clip,) = build_steps(recipe, resources)
    images = [photo("coffee"), rendered_text("big summer sale today only")]
    chunk = Chunk(["a", "b"], ["a cup", "a sale"], images, [b""] * 2, np.zeros(2), np.zeros(2), np.zeros(2))
    clip.measure(Batch(chunk, np.arange(2)))
    coffee, poster = (np.asarray(i).astype(int) for i in resources._scorer.seen)
    assert (coffee == np.asarray(images[0])).all()
    boxes = reader(np.asarray(images[1]))
    text = np.zeros(poster.shape[:2], dtype=bool)
    for x0, y0, x1, y1 in boxes:
        text[y0:y1, x0:x1] = True
    assert np.asarray(images[1])[text].min() < 50  # the dark letters ...
    assert poster[text].min() > 100  # ... are filled with the (light) colour around each box
    assert (poster[~text] == np.asarray(images[1])[~text]).all()  # the rest untouched


def test_caption_overlap_needs_the_ocr_detector(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"max_caption_overlap reads the words.*kind: ocr"):
        recipe_of(tmp_path, [{"kind": "text_spotting", "max_caption_overlap": 0.5}])
    with pytest.raises(ValidationError, match="max_caption_overlap"):
        recipe_of(tmp_path, [{**SPOTTING, "max_caption_overlap": 0}])
