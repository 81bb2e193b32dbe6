"""Data sections for text-rich images: rendered word canvases (`kind: text-images`) and the Lumos-style
OCR prompt any LLaVA JSON or text-image source can add (`ocr_prompt:`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.curate_models import OcrDetector


class OcrPrompt(Section):
    """Decoupled scene-text recognition (Lumos, Shenoy et al. 2024): words read from the image, with their
    boxes, put into the first question as text, in reading order (top to bottom, left to right), so that
    the LLM reads the text without a high-resolution image encoder."""

    words: Literal["data", "reader"] = Field(
        "data",
        description="Where the words come from. 'data': given per sample (an 'ocr' list of {text, box} in "
        "a LLaVA JSON entry; a text-images source's own drawn words and boxes, an oracle OCR). 'reader': "
        "the OCR reader of `reader` run on each image when the data opens, cached per image.",
    )
    reader: OcrDetector = Field(default_factory=OcrDetector, description="The OCR reader (words: reader).")
    cache_dir: Path | None = Field(
        None,
        description="Folder keeping what the reader read per image (keyed by the image's bytes and the "
        "reader's settings), so a rerun or the evaluation reads nothing twice; default: memory only.",
    )
    boxes: bool = Field(
        True, description="Follow each word by its box as integer percentages of the image's sides."
    )
    template: str = Field(
        "Text in the image: {}", description="Line added after <image>, with '{}' for the words."
    )
    max_words: int = Field(32, ge=1, description="Words kept, first in reading order.")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, template: str) -> str:
        if template.count("{}") != 1:
            raise ValueError("the template needs exactly one '{}', where the words go")
        return template


class TextImagesFields(Section):
    """Rendered text canvases, before the fields every conversation source shares."""

    count: int = Field(2000, ge=10, description="Canvases (one question each).")
    canvas_size: int = Field(64, ge=32, le=512, description="Canvas side in pixels, before resizing.")
    font_sizes: tuple[int, int] = Field(
        (9, 13), description="Smallest and largest font size in pixels (drawn with Pillow's default font)."
    )
    words: list[str] | None = Field(
        None, min_length=2, description="Vocabulary of drawn words (default: 48 built-in sign words)."
    )
    seed: Seed = Field(0, description="Seed of the words, positions and questions (not the run's seed).")
    mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation mean.")
    std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="Per-channel normalisation std.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held-out fraction of canvases (fixed split, independent of seed)."
    )
    ocr_prompt: OcrPrompt | None = Field(None, description="Words of the image in the prompt (Lumos).")

    @model_validator(mode="after")
    def _fonts_fit(self) -> TextImagesFields:
        low, high = self.font_sizes
        if not 4 <= low <= high:
            raise ValueError(f"font_sizes {self.font_sizes}: need 4 <= smallest <= largest")
        if high * 3 > self.canvas_size:
            raise ValueError(
                f"font size {high} leaves no room for three lines on a canvas of side {self.canvas_size}"
            )
        return self
