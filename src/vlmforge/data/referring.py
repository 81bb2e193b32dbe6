"""Referring-expression data (RefCOCO-style: Kazemzadeh et al. 2014; Yu et al. 2016) as conversations:
"<image> Where is <expression>?" answered with the box in Kosmos-2 location tokens. Each set keeps the
exact boxes, so evaluation scores predictions against them rather than against the quantised answers.

Boxes are kept as fractions of the image padded to a square (LLaVA-1.5's ``expand2square`` layout, the
one ``vlmforge eval``'s refcoco benchmark reads): the image the model sees is that padded square, so a
box reads the same whatever the image's aspect ratio; a canvas is already square."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import ReferringJsonData
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.conversation_set import IMAGE, ConversationSet, read_json_list
from vlmforge.data.locations import box_answer
from vlmforge.errors import UserError

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
ENTRY_LAYOUT = "a JSON list of {image, expression, box: [x, y, w, h]} (pixels)"


@dataclass
class ReferringSet(ConversationSet):
    """Conversations asking for one box each, with the exact boxes: ``boxes`` [N, 4] as fractions of
    the padded square and ``sides`` [N] that square's side in the source image's pixels (by global
    index), and the grid ``bins`` the answers are written on."""

    boxes: np.ndarray
    sides: np.ndarray
    bins: int

    def subset(self, indices: np.ndarray, suffix: str) -> ReferringSet:
        return ReferringSet(
            self.images.subset(indices, suffix),
            self.conversations,
            self.has_image,
            self.boxes,
            self.sides,
            self.bins,
        )

    def box(self, i: int) -> Box:
        """The true box of item ``i`` as fractions of its padded square."""
        x1, y1, x2, y2 = (float(v) for v in self.boxes[self.global_index(i)])
        return (x1, y1, x2, y2)

    def side(self, i: int) -> float:
        """The side, in source pixels, of item ``i``'s padded square (what a fraction is a fraction of)."""
        return float(self.sides[self.global_index(i)])


def referring_conversations(
    images: ImageTextSet,
    expressions: Sequence[str],
    boxes: np.ndarray,
    sides: np.ndarray,
    bins: int,
    prompt: str,
) -> ReferringSet:
    """One question per expression, answered with its box on a ``bins`` x ``bins`` grid."""
    conversations = [
        [("human", f"{IMAGE}\n{prompt.format(expression)}"), ("gpt", box_answer(box, bins))]
        for expression, box in zip(expressions, boxes, strict=True)
    ]
    return ReferringSet(images, conversations, np.ones(len(conversations), dtype=bool), boxes, sides, bins)


# ------------------------------------------------------------------------------- RefCOCO-style JSON
def referring_entry(entry: Any, where: str) -> tuple[str, str, Box]:
    """(image name, expression, (x1, y1, x2, y2) in pixels) of one {image, expression, box: [x, y, w, h]}
    entry; ``where`` names the file and the entry in errors."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(entry).__name__}")
    for field in ("image", "expression", "box"):
        if field not in entry:
            raise UserError(f"{where}: no field {field!r} (it has {', '.join(map(str, entry)) or 'none'})")
    image, expression, box = entry["image"], entry["expression"], entry["box"]
    for field, value in (("image", image), ("expression", expression)):
        if not isinstance(value, str):
            raise UserError(f"{where}: field {field!r} should be str, found {value!r}"[:300])
    numbers = isinstance(box, list) and len(box) == 4
    numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    if not numbers or box[2] <= 0 or box[3] <= 0:
        raise UserError(f"{where}: 'box' must be [x, y, w, h] in pixels with w, h > 0, not {box}"[:300])
    x, y, w, h = (float(v) for v in box)
    return image, expression, (x, y, x + w, y + h)


def padding(width: int, height: int) -> tuple[int, int, int]:
    """(side, left, top) of the image pasted centred on its padded square (``expand2square``'s offsets)."""
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def pad_to_square(image: Any, fill: tuple[int, int, int]) -> Any:
    """The PIL image centred on a square of colour ``fill``."""
    from PIL import Image

    side, left, top = padding(*image.size)
    if image.size == (side, side):
        return image
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, (left, top))
    return square


def to_square_fractions(box: Box, size: tuple[int, int]) -> Box:
    """A pixel box of an image of ``size`` as fractions of its padded square."""
    side, left, top = padding(*size)
    x1, y1, x2, y2 = box
    return ((x1 + left) / side, (y1 + top) / side, (x2 + left) / side, (y2 + top) / side)


def from_square_fractions(box: Box, size: tuple[int, int]) -> Box:
    """Fractions of the padded square of an image of ``size`` as a pixel box of the image."""
    side, left, top = padding(*size)
    x1, y1, x2, y2 = box
    return (x1 * side - left, y1 * side - top, x2 * side - left, y2 * side - top)


def referring_json(cfg: ReferringJsonData, image_size: int) -> ReferringSet:
    """A RefCOCO-style JSON list as training or evaluation conversations; every missing image is
    reported at once, every malformed entry with its index."""
    from PIL import Image, UnidentifiedImageError

    entries = read_json_list(cfg.path, "referring expression", hint=f"give {ENTRY_LAYOUT}")
    fields = [referring_entry(entry, f"{cfg.path}: entry {n}") for n, entry in enumerate(entries)]
    folder = cfg.image_folder or cfg.path.parent
    files = [folder / image for image, _, _ in fields]
    absent = sorted({str(f) for f in files if not f.is_file()})
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise UserError(f"{cfg.path}: {len(absent)} image file(s) listed but missing: {shown}")
    sizes: dict[Path, tuple[int, int]] = {}
    for file in files:
        try:
            if file not in sizes:
                with Image.open(file) as image:  # reads the header only
                    sizes[file] = image.size
        except (OSError, UnidentifiedImageError):
            raise UserError(f"{file}: not a readable image", hint="replace or remove the entry") from None
    boxes = np.array(
        [to_square_fractions(box, sizes[f]) for (_, _, box), f in zip(fields, files, strict=True)]
    )
    sides = np.array([padding(*sizes[f])[0] for f in files], dtype=np.float64)
    images = ImageTextSet(
        name=cfg.path.stem,
        keys=[str(n) for n in range(len(fields))],
        captions=[[expression] for _, expression, _ in fields],
        load_image=_padded_loader(files, image_size, cfg.mean, cfg.std),
        fingerprint=fingerprint_bytes(cfg.path.read_bytes()),
    )
    expressions = [expression for _, expression, _ in fields]
    return referring_conversations(images, expressions, boxes, sides, cfg.location_bins, cfg.prompt)


def _padded_loader(
    files: list[Path], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[int], torch.Tensor]:
    """Image ``i`` padded to a square of the normalisation mean's colour, resized and normalised; an
    unreadable one raises BadSample naming the file."""
    from vlmforge.data.images import ImageError, decode_rgb, square_tensor

    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    fill = (round(mean[0] * 255), round(mean[1] * 255), round(mean[2] * 255))

    def load(i: int) -> torch.Tensor:
        try:
            image = decode_rgb(files[i])
        except ImageError as exc:
            raise BadSample(Drop(str(files[i].parent), files[i].name, exc.reason, exc.detail)) from None
        return square_tensor(pad_to_square(image, fill), image_size, mean_t, std_t)

    return load
