"""Offline text-rich images: sign words and numbers drawn with Pillow's default font at small sizes on a
larger canvas, each canvas asked one question about its text, with every drawn word's box kept (the
ground truth an OCR reader would ideally return). Canvases are a pure function of the recipe's fields:
the same ``seed`` draws the same words, positions, colours and questions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import TextImagesConversations
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.conversation_set import IMAGE, ConversationSet
from vlmforge.data.ocr_prompt import Reader, Word

SIGN_WORDS = (
    "stop", "open", "exit", "sale", "hotel", "cafe", "bank", "taxi", "bus", "park", "shop", "bar",
    "pizza", "menu", "push", "pull", "closed", "enter", "danger", "police", "school", "market", "bakery",
    "books", "garage", "museum", "cinema", "toilet", "office", "bridge", "north", "south", "east", "west",
    "left", "right", "slow", "yield", "gas", "food", "beer", "wine", "tea", "milk", "fish", "bread",
    "hot", "cold",
)  # fmt: skip
QUESTIONS = {
    "word": ("What word is written?", "What does the text say?"),
    "sign": ("What number is on the sign?", "Which number does the sign show?"),
    "top": ("What word is at the top?",),
    "bottom": ("What word is at the bottom?",),
}
PLACEMENT_TRIES = 100
GAP = 2  # pixels kept between two words' boxes
SIGN_MARGIN = 2  # pixels of sign around its number

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in canvas pixels, end exclusive


@dataclass(frozen=True)
class DrawnWord:
    """One word on a canvas: its text, its ink box, its font size and whether it sits on a sign."""

    text: str
    box: Box
    font_size: int
    on_sign: bool = False


@dataclass(frozen=True)
class TextCanvas:
    """A canvas's words, colours, question and answer."""

    words: tuple[DrawnWord, ...]
    background: tuple[int, int, int]
    ink: tuple[int, int, int]
    question: str
    answer: str


def text_canvases(cfg: TextImagesConversations) -> list[TextCanvas]:
    """``cfg.count`` canvases, the same ones for the same fields."""
    rng = np.random.default_rng(cfg.seed)
    vocabulary = tuple(cfg.words or SIGN_WORDS)
    return [_canvas(cfg, rng, vocabulary) for _ in range(cfg.count)]


def render(canvas: TextCanvas, side: int) -> np.ndarray:
    """[side, side, 3] uint8 RGB pixels of ``canvas``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), canvas.background)
    draw = ImageDraw.Draw(image)
    for word in canvas.words:
        ink = canvas.ink
        if word.on_sign:
            x0, y0, x1, y1 = word.box
            draw.rectangle(
                (x0 - SIGN_MARGIN, y0 - SIGN_MARGIN, x1 + SIGN_MARGIN - 1, y1 + SIGN_MARGIN - 1), fill=ink
            )
            ink = canvas.background
        origin = _origin(word.text, word.font_size, word.box)
        draw.text(origin, word.text, fill=ink, font=_font(word.font_size))
    return np.asarray(image)


def text_image_set(cfg: TextImagesConversations, image_size: int) -> tuple[ConversationSet, list[TextCanvas]]:
    """The canvases as one-question conversations, resized to ``image_size``, and the canvases themselves
    (words and boxes)."""
    canvases = text_canvases(cfg)
    pixels = np.stack([render(c, cfg.canvas_size) for c in canvases])
    drawn = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    resized = torch.nn.functional.interpolate(drawn, size=(image_size, image_size), mode="area")
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    normalised = ((resized - mean) / std).contiguous()
    questions = [c.question for c in canvases]
    images = ImageTextSet(
        name="text-images",
        keys=[f"text-{n:05d}" for n in range(cfg.count)],
        captions=[[c.answer] for c in canvases],
        load_image=normalised.__getitem__,
        fingerprint=fingerprint_bytes(pixels.tobytes(), "\n".join(questions).encode()),
    )
    conversations = [[("human", f"{IMAGE}\n{c.question}"), ("gpt", c.answer)] for c in canvases]
    return ConversationSet(images, conversations, np.ones(cfg.count, dtype=bool)), canvases


def _canvas(
    cfg: TextImagesConversations, rng: np.random.Generator, vocabulary: tuple[str, ...]
) -> TextCanvas:
    """One canvas: a word alone ('word'), a number on a sign beside a word ('sign'), or two words one
    above the other, asked for the top or the bottom one."""
    kind = ("word", "sign", "pair")[int(rng.integers(3))]
    texts = [str(w) for w in rng.choice(vocabulary, size=2, replace=False)]
    if kind == "sign":
        texts[1] = str(int(rng.integers(10, 100)))
    words: list[DrawnWord] = []
    for k, text in enumerate(texts[: 1 if kind == "word" else 2]):
        placed = _place(cfg, rng, text, [w.box for w in words], on_sign=kind == "sign" and k == 1)
        if placed is not None:
            words.append(placed)
    if kind == "pair" and len(words) == 2 and _overlap_rows(words[0].box, words[1].box):
        words = words[:1]  # side by side: neither is 'at the top'
    question_kind, answer = _question(kind, words, rng)
    asked = QUESTIONS[question_kind]
    dark = int(rng.integers(0, 70))
    light = int(rng.integers(185, 256))
    background, ink = ((dark,) * 3, (light,) * 3) if rng.random() < 0.5 else ((light,) * 3, (dark,) * 3)
    return TextCanvas(tuple(words), background, ink, asked[int(rng.integers(len(asked)))], answer)  # type: ignore[arg-type]


def _question(kind: str, words: list[DrawnWord], rng: np.random.Generator) -> tuple[str, str]:
    """The question kind and its answer; a canvas whose second word found no room is a 'word' canvas."""
    if len(words) == 1:
        return "word", words[0].text
    if kind == "sign":
        return "sign", words[1].text
    top, bottom = sorted(words, key=lambda w: w.box[1])
    return ("top", top.text) if rng.random() < 0.5 else ("bottom", bottom.text)


def _place(
    cfg: TextImagesConversations, rng: np.random.Generator, text: str, taken: list[Box], on_sign: bool
) -> DrawnWord | None:
    """``text`` at a random size and free position (None when none is found in ``PLACEMENT_TRIES``)."""
    margin = SIGN_MARGIN if on_sign else 0
    low, high = cfg.font_sizes
    for _ in range(PLACEMENT_TRIES):
        size = int(rng.integers(low, high + 1))
        width, height = _ink_size(text, size)
        room_x, room_y = cfg.canvas_size - width - 2 * margin, cfg.canvas_size - height - 2 * margin
        if room_x < 0 or room_y < 0:
            continue
        x, y = int(rng.integers(0, room_x + 1)) + margin, int(rng.integers(0, room_y + 1)) + margin
        box = (x, y, x + width, y + height)
        if all(_apart(box, other, GAP + 2 * SIGN_MARGIN) for other in taken):
            return DrawnWord(text, box, size, on_sign)
    return None


def _apart(a: Box, b: Box, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _overlap_rows(a: Box, b: Box) -> bool:
    return a[1] < b[3] and b[1] < a[3]


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _ink_size(text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = _font(size).getbbox(text)
    return right - left, bottom - top


def _origin(text: str, size: int, box: Box) -> tuple[int, int]:
    """Where Pillow must start drawing for the ink to begin at the box's top-left corner."""
    left, top, _, _ = _font(size).getbbox(text)
    return box[0] - left, box[1] - top


def text_image_conversations(
    cfg: TextImagesConversations, image_size: int, reader: Reader | None = None
) -> ConversationSet:
    """The canvases' conversations, with their words in the prompt when ``cfg.ocr_prompt`` is set: the
    drawn words and boxes (words: data, an oracle OCR) or what the OCR reader (``reader``, default
    EasyOCR) reads on a canvas the first time it is asked for (words: reader)."""
    from vlmforge.data.ocr_prompt import CachedReader, ReadOnDemand, with_words

    data, canvases = text_image_set(cfg, image_size)
    prompt = cfg.ocr_prompt
    if prompt is None:
        return data
    if prompt.words == "data":
        return with_words(data, [drawn_words(c, cfg.canvas_size) for c in canvases], prompt)
    cached = CachedReader(prompt, reader)

    def words_of(index: int) -> list[Word]:
        return cached.read(render(canvases[index], cfg.canvas_size))

    return ReadOnDemand(data.images, data.conversations, data.has_image, words_of, prompt)


def drawn_words(canvas: TextCanvas, side: int) -> list[Word]:
    """The canvas's words with their boxes as fractions of its side: what a perfect OCR would read."""
    return [
        (w.text, (w.box[0] / side, w.box[1] / side, w.box[2] / side, w.box[3] / side)) for w in canvas.words
    ]
