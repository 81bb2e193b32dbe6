"""Offline referring-expression canvases: sklearn's handwritten digits and simple coloured shapes pasted
at random, non-overlapping positions on a black square, each canvas asked for one object by an
expression that singles it out ("the seven", "the seven on the left", "the red square above the
circle"); its box is known exactly. Held-out canvases draw their digits from images no training canvas
uses (the digits' fixed stratified split), so a held-out score measures grounding, not memorised digits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlmforge.config.schema import BoxCanvases, ReferringCanvases
from vlmforge.data.base import ImageTextSet, fingerprint_bytes, split_indices
from vlmforge.data.referring import ReferringSet, referring_conversations

COLOURS = {"red": (1.0, 0.2, 0.2), "green": (0.2, 1.0, 0.2), "blue": (0.3, 0.4, 1.0)}
SHAPES = ("square", "circle", "triangle")
GAP = 1  # pixels kept free between two objects, so that every box holds one object
PLACEMENT_TRIES = 200
# (word for the smaller coordinate, word for the larger) along x and along y
SIDES = {0: ("on the left", "on the right"), 1: ("at the top", "at the bottom")}
RELATIONS = {0: ("left of", "right of"), 1: ("above", "below")}


@dataclass(frozen=True)
class Placed:
    """One object on a canvas: its name ("seven", "red square"), its pixel box (x1, y1, x2, y2, end
    exclusive) and what to draw (a digit image's index, or a shape and colour)."""

    name: str
    box: tuple[int, int, int, int]
    digit: int | None = None
    shape: str | None = None
    colour: str | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


def canvas_set(cfg: ReferringCanvases, image_size: int) -> ReferringSet:
    """``cfg.count`` canvases (the same for a ``cfg.seed``), each with one question, rendered at
    ``cfg.canvas_size`` and resized to ``image_size``; the held-out part is ``split_indices``'s."""
    from sklearn.datasets import load_digits

    from vlmforge.data.digits import CLASSNAMES

    digits = load_digits()
    pixels = digits.images.astype(np.float32) / 16.0
    train_digits, val_digits = split_indices(len(pixels), digits.target, 0.2)
    _, held_out = split_indices(cfg.count, None, cfg.val_fraction)
    is_held_out = np.zeros(cfg.count, dtype=bool)
    is_held_out[held_out] = True
    rng = np.random.default_rng(cfg.seed)
    names = [CLASSNAMES[int(y)] for y in digits.target]
    layouts, expressions = [], []
    for n in range(cfg.count):
        pool = val_digits if is_held_out[n] else train_digits
        objects = _layout(cfg, rng, pool, names)
        target = int(rng.integers(len(objects)))
        expressions.append(_expression(objects, target, rng))
        layouts.append([objects[target], *(o for k, o in enumerate(objects) if k != target)])  # target first
    canvases = torch.from_numpy(np.stack([_render(objects, cfg.canvas_size, pixels) for objects in layouts]))
    resized = torch.nn.functional.interpolate(canvases, size=(image_size, image_size), mode="area")
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    normalised = ((resized - mean) / std).contiguous()
    boxes = np.array([objects[0].box for objects in layouts], dtype=np.float64) / cfg.canvas_size
    images = ImageTextSet(
        name="referring-canvases",
        keys=[f"canvas-{n:05d}" for n in range(cfg.count)],
        captions=[[expression] for expression in expressions],
        load_image=normalised.__getitem__,
        fingerprint=fingerprint_bytes(canvases.numpy().tobytes(), "\n".join(expressions).encode()),
    )
    sides = np.full(cfg.count, float(cfg.canvas_size))
    return referring_conversations(images, expressions, boxes, sides, cfg.location_bins, cfg.prompt)


def box_canvas_set(cfg: BoxCanvases) -> ImageTextSet:
    """The canvases as image-expression pairs, each with its object's box (``ImageTextSet.boxes``); the
    held-out split is the one ``canvas_set`` holds out, since neither has labels to stratify by."""
    drawn = cfg.canvases.model_copy(update={"mean": cfg.mean, "std": cfg.std})
    referring = canvas_set(drawn, cfg.image_size)
    images = referring.images
    return ImageTextSet(
        name="box-canvases",
        keys=images.keys,
        captions=images.captions,
        load_image=images.load_image,
        fingerprint=images.fingerprint,
        boxes=referring.boxes.astype(np.float32),
    )


def _layout(
    cfg: ReferringCanvases, rng: np.random.Generator, pool: np.ndarray, names: list[str]
) -> list[Placed]:
    """2 to ``cfg.max_objects`` objects at free positions; half the canvases repeat an object's name
    (another seven, another red square), so that only its position tells the two apart."""
    count = int(rng.integers(2, cfg.max_objects + 1))
    kinds = [_kind(cfg, rng, pool, names) for _ in range(count)]
    if rng.random() < 0.5:
        twin = kinds[0]
        if twin[1] is not None:  # a digit: another image of the same class
            same = [int(i) for i in pool if names[int(i)] == twin[0]]
            twin = (twin[0], same[int(rng.integers(len(same)))], None, None)
        kinds[1] = twin
    placed: list[Placed] = []
    for name, digit, shape, colour in kinds:
        box = _free_box(cfg, rng, [p.box for p in placed])
        if box is not None:
            placed.append(Placed(name, box, digit, shape, colour))
    return placed


def _kind(
    cfg: ReferringCanvases, rng: np.random.Generator, pool: np.ndarray, names: list[str]
) -> tuple[str, int | None, str | None, str | None]:
    """(name, digit image, shape, colour) of one random object of the kinds the recipe asks for."""
    use_digit = cfg.objects == "digits" or (cfg.objects == "both" and rng.random() < 0.5)
    if use_digit:
        digit = int(pool[int(rng.integers(len(pool)))])
        return names[digit], digit, None, None
    shape, colour = SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))]
    return f"{colour} {shape}", None, shape, colour


def _free_box(
    cfg: ReferringCanvases, rng: np.random.Generator, taken: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    """A random square box of side in [min_object, max_object] clear of ``taken`` by ``GAP`` pixels
    (None when none is found: the canvas then holds fewer objects)."""
    for _ in range(PLACEMENT_TRIES):
        side = int(rng.integers(cfg.min_object, cfg.max_object + 1))
        x, y = (int(v) for v in rng.integers(0, cfg.canvas_size - side + 1, size=2))
        box = (x, y, x + side, y + side)
        if all(_apart(box, other) for other in taken):
            return box
    return None


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _expression(objects: list[Placed], target: int, rng: np.random.Generator) -> str:
    """An expression naming ``objects[target]`` and no other object: by name alone, by its side among
    objects of the same name, or (for half the unique names) by where it is relative to another object."""
    chosen = objects[target]
    same = [o for o in objects if o.name == chosen.name]
    if len(same) > 1:
        axis = _widest_axis(same)
        coordinates = [o.centre[axis] for o in same]
        mine = chosen.centre[axis]
        for end, word in zip((min(coordinates), max(coordinates)), SIDES[axis], strict=True):
            if mine == end and coordinates.count(end) == 1:
                return f"the {chosen.name} {word}"
        return f"the {chosen.name} between the others"
    others = [o for k, o in enumerate(objects) if k != target]
    if rng.random() < 0.5:
        return f"the {chosen.name}"
    anchor = others[int(rng.integers(len(others)))]
    axis = _widest_axis([chosen, anchor])
    before = chosen.centre[axis] < anchor.centre[axis]
    relation = RELATIONS[axis][0 if before else 1]
    return f"the {chosen.name} {relation} the {_short_name(anchor, objects)}"


def _widest_axis(objects: list[Placed]) -> int:
    """The axis (0: x, 1: y) along which the objects' centres spread most."""
    spread = [max(o.centre[a] for o in objects) - min(o.centre[a] for o in objects) for a in (0, 1)]
    return 0 if spread[0] >= spread[1] else 1


def _short_name(anchor: Placed, objects: list[Placed]) -> str:
    """The anchor's shape alone ("circle") when no other object has that shape, else its full name."""
    if anchor.shape is not None and sum(o.shape == anchor.shape for o in objects) == 1:
        return anchor.shape
    return anchor.name


def _render(objects: list[Placed], side: int, digit_pixels: np.ndarray) -> np.ndarray:
    """[3, side, side] float canvas in [0, 1]: digits in white, shapes in their colour."""
    canvas = np.zeros((3, side, side), dtype=np.float32)
    for placed in objects:
        x1, y1, x2, y2 = placed.box
        size = x2 - x1
        if placed.digit is not None:
            patch = torch.from_numpy(digit_pixels[placed.digit])[None, None]
            scaled = torch.nn.functional.interpolate(patch, size=(size, size), mode="bilinear")
            canvas[:, y1:y2, x1:x2] = np.maximum(canvas[:, y1:y2, x1:x2], scaled[0, 0].numpy())
        else:
            assert placed.shape is not None and placed.colour is not None
            mask = _shape_mask(placed.shape, size)
            colour = np.asarray(COLOURS[placed.colour], dtype=np.float32)[:, None, None]
            canvas[:, y1:y2, x1:x2] = np.where(mask, colour, canvas[:, y1:y2, x1:x2])
    return canvas


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """[size, size] bool mask of a shape filling its box (touching every side of it)."""
    centres = (np.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    y, x = np.meshgrid(centres, centres, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        radius = 0.5 + 0.5 / size  # the pixels on the box's middle row and column are inside
        return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= radius**2
    return np.abs(x - 0.5) <= y / 2 + 0.5 / size  # triangle: apex on top, base on the bottom row
