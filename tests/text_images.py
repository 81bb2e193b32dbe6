"""A labelled set of text-dominated and natural images, built offline and seeded, for measuring text
spotting: posters, slides, signs, book covers, memes and text screenshots (PIL-rendered with matplotlib's
bundled DejaVu fonts, several sizes, colours and angles, over plain, gradient and photo backgrounds)
against scikit-image / sklearn photos, their crops, flips and rescalings, and photos carrying a small
watermark or caption strip (at most ~5% of the area), which text spotting must keep.

``labelled_images(seed)`` gives ``LabelledImage`` rows; ``split_halves`` gives the pick / check halves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

TEXT = "text"
NATURAL = "natural"
PHRASES = (
    "summer sale today only grand opening free entry live music night market best coffee in town "
    "welcome home new arrivals fresh bread open late concert tickets available now limited offer "
    "city marathon register online join the club save the date annual meeting chapter one the last "
    "journey stories of the sea a novel when cats rule the world keep calm and carry on quarterly "
    "results revenue growth agenda introduction methods conclusion questions thank you"
)
WORDS = PHRASES.split()
PHOTO_NAMES = (
    "astronaut", "brick", "camera", "cat", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket", "china", "flower",
)  # fmt: skip
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf",
)  # fmt: skip


@dataclass(frozen=True)
class LabelledImage:
    name: str
    label: str  # TEXT or NATURAL
    image: object  # PIL RGB image


@cache
def base_photo(name: str) -> object:
    """A bundled photo as RGB, its long side at most 512 px."""
    from PIL import Image

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
    image = Image.fromarray(array).convert("RGB")
    scale = min(1.0, 512 / max(image.size))
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.BICUBIC)


def font(index: int, size: int) -> object:
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return ImageFont.truetype(str(folder / FONT_FILES[index % len(FONT_FILES)]), size)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _contrasting(background: tuple[int, int, int]) -> tuple[int, int, int]:
    return (15, 15, 15) if sum(background) > 380 else (245, 245, 240)


def _phrase(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, words))


def background(rng: np.random.Generator, size: tuple[int, int], style: str) -> object:
    """A plain, vertical-gradient or (dimmed) photo canvas."""
    from PIL import Image, ImageEnhance

    if style == "plain":
        return Image.new("RGB", size, _colour(rng))
    if style == "gradient":
        top, bottom = np.array(_colour(rng)), np.array(_colour(rng))
        ramp = np.linspace(0, 1, size[1])[:, None, None]
        pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size[0], 1))
        return Image.fromarray(pixels.astype(np.uint8))
    photo = base_photo(PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))]).resize(size)  # type: ignore[attr-defined]
    return ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.35, 0.6)))


def draw_lines(canvas: object, rng: np.random.Generator, lines: list[str], size: int, angle: float) -> object:
    """Lines of text stacked from the top left (with a random margin), rotated by ``angle`` degrees."""
    from PIL import Image, ImageDraw

    width, height = canvas.size  # type: ignore[attr-defined]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    face = font(int(rng.integers(len(FONT_FILES))), size)
    y = int(rng.integers(2, max(3, height // 12)))
    for line in lines:
        draw.text((int(rng.integers(2, max(3, width // 12))), y), line, fill=255, font=face)
        y += int(size * 1.25)
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    tone = canvas.resize((1, 1)).getpixel((0, 0))  # type: ignore[attr-defined]
    ink = Image.new("RGB", (width, height), _contrasting(tone))
    return Image.composite(ink, canvas, layer)  # type: ignore[arg-type]


def poster(rng: np.random.Generator) -> object:
    size = (int(rng.integers(256, 448)), int(rng.integers(320, 512)))
    canvas = background(rng, size, str(rng.choice(["plain", "gradient", "photo"])))
    lines = [_phrase(rng, 2) for _ in range(int(rng.integers(3, 6)))]
    return draw_lines(canvas, rng, lines, size[0] // 7, float(rng.choice([0, 0, -8, 6])))


def slide(rng: np.random.Generator) -> object:
    size = (int(rng.integers(400, 512)), 300)
    canvas = background(rng, size, str(rng.choice(["plain", "gradient"])))
    lines = [_phrase(rng, 3)] + [f"- {_phrase(rng, 4)}" for _ in range(int(rng.integers(4, 7)))]
    return draw_lines(canvas, rng, lines, int(rng.integers(22, 30)), 0.0)


def sign(rng: np.random.Generator) -> object:
    size = (int(rng.integers(320, 480)), int(rng.integers(200, 320)))
    canvas = background(rng, size, "plain")
    lines = [_phrase(rng, 1) for _ in range(int(rng.integers(2, 4)))]
    return draw_lines(canvas, rng, lines, size[1] // 4, float(rng.uniform(-12, 12)))


def book_cover(rng: np.random.Generator) -> object:
    size = (int(rng.integers(256, 320)), int(rng.integers(384, 480)))
    canvas = background(rng, size, str(rng.choice(["gradient", "photo"])))
    title = [_phrase(rng, 1) for _ in range(int(rng.integers(3, 5)))]
    return draw_lines(canvas, rng, [*title, "", _phrase(rng, 2)], size[0] // 6, 0.0)


def meme(rng: np.random.Generator) -> object:
    """Impact-style caption: white text with a black outline, top and bottom of a photo."""
    from PIL import ImageDraw

    photo = base_photo(PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))]).copy()  # type: ignore[attr-defined]
    draw = ImageDraw.Draw(photo)
    width, height = photo.size
    face = font(1, max(18, width // 9))
    for y in (4, height // 3, height - height // 3):
        draw.text(
            (6, y), _phrase(rng, 2).upper(), font=face, fill="white", stroke_width=2, stroke_fill="black"
        )
    return photo


def screenshot(rng: np.random.Generator) -> object:
    size = (int(rng.integers(360, 512)), int(rng.integers(280, 400)))
    canvas = background(rng, size, "plain")
    text_size = int(rng.integers(13, 20))
    rows = size[1] // int(text_size * 1.25) - 1
    return draw_lines(canvas, rng, [_phrase(rng, 8) for _ in range(rows)], text_size, 0.0)


GENERATORS: dict[str, Callable[[np.random.Generator], object]] = {
    "poster": poster, "slide": slide, "sign": sign, "book_cover": book_cover, "meme": meme,
    "screenshot": screenshot,
}  # fmt: skip


def variants(name: str, rng: np.random.Generator) -> list[tuple[str, object]]:
    """The photo, mirrored, a random crop of half to 3/4 of each side, and rescaled to 160-320 px."""
    from PIL import ImageOps

    photo = base_photo(name)
    width, height = photo.size  # type: ignore[attr-defined]
    cw, ch = int(width * rng.uniform(0.5, 0.75)), int(height * rng.uniform(0.5, 0.75))
    x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    side = int(rng.integers(160, 320))
    scale = side / max(width, height)
    return [
        (name, photo),
        (f"{name}-flip", ImageOps.mirror(photo)),  # type: ignore[arg-type]
        (f"{name}-crop", photo.crop((x, y, x + cw, y + ch))),  # type: ignore[attr-defined]
        (f"{name}-small", photo.resize((round(width * scale), round(height * scale)))),  # type: ignore[attr-defined]
    ]


def watermarked(name: str, rng: np.random.Generator) -> object:
    """A photo with a corner watermark or a short caption strip: incidental text, ~1-5% of the area."""
    from PIL import ImageDraw

    photo = base_photo(name).copy()  # type: ignore[attr-defined]
    draw = ImageDraw.Draw(photo)
    width, height = photo.size
    face = font(int(rng.integers(len(FONT_FILES))), max(10, height // 28))
    text = f"(c) {_phrase(rng, 2)} 2024" if rng.random() < 0.5 else _phrase(rng, 3)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    x = int(rng.choice([6, width - (right - left) - 6]))
    y = int(rng.choice([6, height - (bottom - top) - 10]))
    draw.text((x, y), text, font=face, fill=(255, 255, 255) if rng.random() < 0.6 else (20, 20, 20))
    return photo


def labelled_images(seed: int = 0, per_kind: int = 12) -> list[LabelledImage]:
    """``per_kind`` images of each text-dominated kind plus skimage's page and text scans; every photo in
    four variants plus one watermarked copy each (5 x 18 = 90 natural images)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = [
        LabelledImage(f"{kind}-{i}", TEXT, make(rng).convert("RGB"))  # type: ignore[attr-defined]
        for kind, make in GENERATORS.items()
        for i in range(per_kind)
    ]
    rows += [
        LabelledImage(n, TEXT, Image.fromarray(getattr(skimage.data, n)()).convert("RGB")) for n in ("page",)
    ]
    for name in PHOTO_NAMES:
        rows += [LabelledImage(label, NATURAL, image) for label, image in variants(name, rng)]
        rows.append(LabelledImage(f"{name}-watermark", NATURAL, watermarked(name, rng)))
    return rows


def split_halves(rows: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """The half thresholds are picked on and the half they are checked on: alternate text-dominated images,
    and natural images by source photo (every variant of a photo falls in the same half)."""
    text = [row for row in rows if row.label == TEXT]
    first = set(PHOTO_NAMES[0::2])
    natural = [row for row in rows if row.label == NATURAL]
    pick = text[0::2] + [row for row in natural if row.name.split("-")[0] in first]
    check = text[1::2] + [row for row in natural if row.name.split("-")[0] not in first]
    return pick, check
