"""Decoupled scene-text recognition (Lumos, Shenoy et al. 2024, "Lumos: Empowering Multimodal LLMs with
Scene Text Recognition"): an OCR reader's words, with their boxes, written into the first question in
reading order, so the LLM reads the image's text from the prompt instead of from high-resolution pixels.

Words come from the data (an 'ocr' list per LLaVA JSON entry, a text-images source's drawn words) or from
the OCR reader run when the data opens, its results cached per image."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.schema import LlavaJsonData
from vlmforge.config.text_images import OcrPrompt
from vlmforge.data.conversation_set import IMAGE, ConversationSet, Turn, read_json_list
from vlmforge.errors import UserError

NormBox = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the image's width, height
Word = tuple[str, NormBox]
PixelRead = tuple[tuple[int, int, int, int], str]  # what OcrReader.read gives: pixel box, text
Reader = Callable[[np.ndarray], list[PixelRead]]


def reading_order(words: Sequence[Word]) -> list[Word]:
    """Top to bottom, then left to right: a word joins the current line when its vertical centre lies
    within the line's vertical extent, lines are ordered by their top and words in a line by their left."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: ((w[1][1] + w[1][3]) / 2, w[1][0])):
        centre = (word[1][1] + word[1][3]) / 2
        if lines and min(w[1][1] for w in lines[-1]) <= centre <= max(w[1][3] for w in lines[-1]):
            lines[-1].append(word)
        else:
            lines.append([word])
    lines.sort(key=lambda line: min(w[1][1] for w in line))
    return [w for line in lines for w in sorted(line, key=lambda w: w[1][0])]


def format_words(words: Sequence[Word], boxes: bool) -> str:
    """'stop [10, 20, 40, 31], 42 [50, 60, 70, 72]': each word, with its box in integer percentages of
    the image's sides when ``boxes``; words are assumed already in reading order."""
    if not boxes:
        return ", ".join(text for text, _ in words)
    return ", ".join(f"{text} [{', '.join(str(round(100 * v)) for v in box)}]" for text, box in words)


def prompt_turns(turns: Sequence[Turn], words: Sequence[Word], cfg: OcrPrompt) -> list[Turn]:
    """``turns`` with the words' line (``cfg.template``) after ``<image>`` in the first question (before
    it when the question has no image); a conversation with no words gets 'none' for them."""
    ordered = reading_order(words)[: cfg.max_words]
    line = cfg.template.format(format_words(ordered, cfg.boxes) if ordered else "none")
    role, question = turns[0]
    if IMAGE in question:
        before, after = question.split(IMAGE, 1)
        question = f"{before}{IMAGE}\n{line}\n{after.lstrip()}"
    else:
        question = f"{line}\n{question}"
    return [(role, question), *turns[1:]]


def with_words(data: ConversationSet, words: Sequence[Sequence[Word]], cfg: OcrPrompt) -> ConversationSet:
    """``data`` with every conversation's first question carrying its words (global indices)."""
    conversations = [prompt_turns(turns, w, cfg) for turns, w in zip(data.conversations, words, strict=True)]
    return ConversationSet(data.images, conversations, data.has_image)


@dataclass
class ReadOnDemand(ConversationSet):
    """Conversations whose words an OCR reader reads the first time a sample is asked for (then kept):
    training reads its own split once, and an evaluation only the samples it scores."""

    words_of: Callable[[int], list[Word]]  # by global index
    cfg: OcrPrompt
    prompted: dict[int, list[Turn]] = field(default_factory=dict)

    def turns(self, i: int) -> list[Turn]:
        index = self.global_index(i)
        if index not in self.prompted:
            self.prompted[index] = prompt_turns(self.conversations[index], self.words_of(index), self.cfg)
        return self.prompted[index]

    def subset(self, indices: np.ndarray, suffix: str) -> ConversationSet:
        images = self.images.subset(indices, suffix)
        return ReadOnDemand(
            images, self.conversations, self.has_image, self.words_of, self.cfg, self.prompted
        )


def normalised(reads: Sequence[PixelRead], width: int, height: int) -> list[Word]:
    """Pixel boxes as fractions of the image's sides."""
    return [(text, (x0 / width, y0 / height, x1 / width, y1 / height)) for (x0, y0, x1, y1), text in reads]


class CachedReader:
    """An OCR reader whose results are kept per image: in memory, and in ``cache_dir`` (one JSON per
    image, named by the hash of its pixels and the reader's settings) when given. The reader is only
    loaded when an image is not cached."""

    def __init__(self, cfg: OcrPrompt, reader: Reader | None = None) -> None:
        self.cfg, self._reader = cfg, reader
        self._memory: dict[str, list[PixelRead]] = {}
        self._settings = cfg.reader.model_dump_json(exclude={"model_dir"}).encode()

    def read(self, rgb: np.ndarray) -> list[Word]:
        """The words in ``rgb`` ([H, W, 3] uint8), boxes normalised."""
        key = hashlib.sha1(self._settings + str(rgb.shape).encode() + rgb.tobytes()).hexdigest()
        if key not in self._memory:
            stored = self._stored(key)  # an image with no words is stored as [], also a hit
            self._memory[key] = self._read_and_store(key, rgb) if stored is None else stored
        return normalised(self._memory[key], rgb.shape[1], rgb.shape[0])

    def _stored(self, key: str) -> list[PixelRead] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        return [(tuple(box), text) for box, text in json.loads(path.read_text())]  # type: ignore[misc]

    def _read_and_store(self, key: str, rgb: np.ndarray) -> list[PixelRead]:
        if self._reader is None:
            from vlmforge.ocr import OcrReader

            self._reader = OcrReader(self.cfg.reader).read
        reads = self._reader(rgb)
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([[list(box), text] for box, text in reads]))
            tmp.replace(path)
        return reads

    def _path(self, key: str) -> Path | None:
        return None if self.cfg.cache_dir is None else self.cfg.cache_dir / f"{key}.json"


def json_with_words(
    cfg: LlavaJsonData, data: ConversationSet, reader: Reader | None = None
) -> ConversationSet:
    """``data`` (what ``llava_json`` read from ``cfg``) with each entry's words in its first question: its
    'ocr' list (words: data) or what the reader reads in its image when first asked (words: reader), boxes
    normalised by the image's size; an entry without an image has none."""
    assert cfg.ocr_prompt is not None
    entries = read_json_list(cfg.path, "conversation", hint="set the stage's data.path")
    folder = cfg.image_folder or cfg.path.parent
    images = [folder / str(entry["image"]) if entry.get("image") else None for entry in entries]
    if cfg.ocr_prompt.words == "data":
        words = [
            _entry_words(entry, image, f"{cfg.path}: entry {n}") if image is not None else []
            for n, (entry, image) in enumerate(zip(entries, images, strict=True))
        ]
        return with_words(data, words, cfg.ocr_prompt)
    cached = CachedReader(cfg.ocr_prompt, reader)

    def words_of(index: int) -> list[Word]:
        image = images[index]
        return [] if image is None else cached.read(_rgb(image))

    return ReadOnDemand(data.images, data.conversations, data.has_image, words_of, cfg.ocr_prompt)


def _entry_words(entry: dict[str, Any], image: Path, where: str) -> list[Word]:
    """An entry's 'ocr' list of {text, box: [x0, y0, x1, y1] pixels}, checked."""
    listed = entry.get("ocr")
    hint = 'give \'ocr\': [{"text": "stop", "box": [x0, y0, x1, y1]}, ...] (pixels), or use words: reader'
    if not isinstance(listed, list):
        raise UserError(
            f"{where}: 'ocr' must be a list of {{text, box}} with ocr_prompt.words: data", hint=hint
        )
    from PIL import Image

    with Image.open(image) as opened:
        width, height = opened.size
    reads: list[PixelRead] = []
    for k, item in enumerate(listed):
        box = item.get("box") if isinstance(item, dict) else None
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not _is_box(box):
            raise UserError(f"{where}: ocr[{k}] needs 'text' (a string) and 'box' (4 numbers)", hint=hint)
        reads.append(((box[0], box[1], box[2], box[3]), text))  # type: ignore[index]
    return normalised(reads, width, height)


def _is_box(box: Any) -> bool:
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    )


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(
            f"{path}: cannot read the image for OCR: {exc}", hint="replace or drop the file"
        ) from None
