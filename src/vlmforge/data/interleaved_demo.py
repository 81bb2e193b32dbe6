"""A small interleaved corpus built offline, for tests and the demo: documents about handwritten digits
(sklearn's scans) and drawn shapes, paragraphs from templates with seeded fillers, and planted problems
the document-level curation must catch (tiny, banner and logo images, a reused image, spam, keyword
and short paragraphs, exact and near duplicate documents, unreadable documents).

``planted`` maps a document key to the (stage, reason) that must drop it; ``removed`` maps a key to
the (node, kind, reason) of each node that must be removed from it."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmforge.data.interleaved import Document, Picture, document_json, write_documents

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (200, 40, 40), "green": (40, 150, 60), "blue": (40, 70, 190), "orange": (230, 140, 30)}
PEOPLE = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
CITIES = ["Lyon", "Porto", "Osaka", "Lagos", "Quito", "Oslo", "Pune", "Tartu", "Cork", "Accra", "Perth"]
THINGS = ["pencil", "fountain pen", "marker", "crayon", "brush", "stylus", "ballpoint pen", "felt tip"]
PAPERS = ["white", "lined", "squared", "recycled", "yellow", "thin", "glossy", "rough"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEMPLATES = {
    "digit": [
        "This page is part of a small collection of handwritten digits that volunteers wrote on forms.",
        "The digit in the picture is a {name}, and it was written quickly by someone in a hurry.",
        "Each form was scanned at a low resolution, so every digit is only eight pixels wide.",
        "We enlarged the scan so that the strokes of the {name} are easy to see on a screen.",
        "Some writers close the loop of the {name} while others leave a small gap at the top.",
        "The collection was first used to teach computers how to read postal codes on envelopes.",
        "If you look closely at the {name}, you can see where the pen slowed down on the paper.",
    ],
    "shape": [
        "This lesson is about simple shapes and the colours that we use to draw them.",
        "The picture shows a {name} that was filled with one colour on a light grey background.",
        "A {name} is one of the first shapes that children learn to name when they start school.",
        "We drew the {name} with a small computer program, so all of its edges are perfectly sharp.",
        "Try to count the corners of the {name} before you read the answer in the next part.",
        "Teachers often use pictures like this one when they explain geometry to their young pupils.",
    ],
}


@dataclass
class DemoCorpus:
    shards: list[Path]
    keys: list[str] = field(default_factory=list)  # every document key, input order
    planted: dict[str, tuple[str, str]] = field(default_factory=dict)
    removed: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)


def _png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def digit_picture(pixels: np.ndarray, side: int = 160, lift: int = 0) -> Picture:
    from PIL import Image

    grey = np.clip(pixels / 16.0 * 255 + lift, 0, 255).astype(np.uint8)
    return Picture(
        _png(Image.fromarray(grey, mode="L").resize((side, side), Image.Resampling.NEAREST)), "png"
    )


def shape_picture(
    shape: str, colour: str, size: tuple[int, int] = (180, 160), rng: np.random.Generator | None = None
) -> Picture:
    """The shape filled with the colour on grey: centred, or (with ``rng``) placed and sized at random
    beside a second, smaller shape, so that no two drawings are perceptual duplicates."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", size, (225, 225, 225))
    draw = ImageDraw.Draw(canvas)
    w, h = size
    if rng is None:
        _draw(draw, shape, (w // 4, h // 4, 3 * w // 4, 3 * h // 4), COLOURS[colour])
        return Picture(_png(canvas), "png")
    side = int(rng.integers(50, 90))
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    _draw(draw, shape, (x, y, x + side, y + side), COLOURS[colour])
    small = int(rng.integers(20, 40))
    x, y = int(rng.integers(0, w - small)), int(rng.integers(0, h - small))
    _draw(draw, SHAPES[int(rng.integers(3))], (x, y, x + small, y + small), (60, 60, 60))
    return Picture(_png(canvas), "png")


def _draw(draw: object, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse(box, fill=fill)  # type: ignore[attr-defined]
    elif shape == "square":
        draw.rectangle(box, fill=fill)  # type: ignore[attr-defined]
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)  # type: ignore[attr-defined]


def fillers(rng: np.random.Generator, topic: str) -> list[str]:
    """Three differently built sentences whose slots (never more than four words apart) make each
    document's text its own."""
    p = [str(rng.choice(options)) for options in (PEOPLE, CITIES, DAYS, THINGS, PAPERS, PEOPLE, CITIES)]
    return [
        f"{p[0]} from {p[1]} added this {topic} on a {p[2]}, and {p[5]} checked it later.",
        f"The {topic} was drawn with a {p[3]} on {p[4]} paper that came from a shop in {p[6]}.",
        f"On the {p[2]} after that, {p[5]} and {p[0]} compared it with the rest of their {topic} notes.",
    ]


def paragraphs(rng: np.random.Generator, topic: str, name: str, count: int) -> list[str]:
    chosen = rng.choice(len(TEMPLATES[topic]), size=count, replace=False)
    extra = fillers(rng, topic)
    return [f"{TEMPLATES[topic][int(i)].format(name=name)} {extra[n % 3]}" for n, i in enumerate(chosen)]


def clean_document(key: str, rng: np.random.Generator, digits: object, index: int) -> Document:
    """Paragraph, image, paragraph, image, paragraph: a digit or a shape page."""
    if index % 2 == 0:
        label = int(digits.target[index])  # type: ignore[attr-defined]
        texts = paragraphs(rng, "digit", DIGITS[label], 3)
        pics = [digit_picture(digits.images[index]), digit_picture(digits.images[index + 1000])]  # type: ignore[attr-defined]
    else:
        shape, colour = SHAPES[index % 3], list(COLOURS)[index % 4]
        texts = paragraphs(rng, "shape", shape, 3)
        pics = [shape_picture(shape, colour, rng=rng), shape_picture(shape, colour, (200, 150), rng)]
    return Document(key, [texts[0], None, texts[1], None, texts[2]], [None, pics[0], None, pics[1], None])


def make_corpus(root: Path, documents: int = 30, shards: int = 2, seed: int = 0) -> DemoCorpus:
    """Write ``documents`` clean documents plus the planted ones as ``shards`` tar files under ``root``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    docs = [clean_document(f"doc-{i:04d}", rng, digits, i) for i in range(documents)]
    corpus = DemoCorpus([])
    logo = shape_picture("circle", "orange", (160, 160))
    for doc in docs[:12]:  # a logo on twelve pages: more than OBELICS' 10
        doc.texts.append(None)
        doc.images.append(Picture(logo.data, "png"))
        corpus.removed.setdefault(doc.key, []).append((len(doc.images) - 1, "image", "repeated_image"))

    for doc, drop, nodes in planted_documents(rng, digits, docs):
        docs.append(doc)
        if drop:
            corpus.planted[doc.key] = drop
        if nodes:
            corpus.removed[doc.key] = nodes
    corpus.keys = [d.key for d in docs]
    bounds = np.linspace(0, len(docs), shards + 1).round().astype(int)
    for s in range(shards):
        path = root / f"docs-{s:04d}.tar"
        write_documents(path, docs[bounds[s] : bounds[s + 1]])
        corpus.shards.append(path)
    _append_unreadable(corpus.shards[-1], corpus)
    return corpus


Planted = tuple[Document, tuple[str, str] | None, list[tuple[int, str, str]]]


def with_image(doc: Document, at: int, picture: Picture) -> Document:
    doc.texts.insert(at, None)
    doc.images.insert(at, picture)
    return doc


def planted_documents(rng: np.random.Generator, digits: object, docs: list[Document]) -> list[Planted]:
    """Documents with one problem each: (document, the drop it must get or None, the node removals)."""

    def base(n: int) -> Document:
        return clean_document(f"bad-{n:02d}", rng, digits, 100 + 2 * n)

    reused = base(2)
    reused.images[1] = docs[0].images[1]  # the first page's digit, again, then a brighter copy of it
    with_image(reused, 4, digit_picture(digits.images[0], lift=10))  # type: ignore[attr-defined]
    spam, keywords, click = base(3), base(4), base(5)
    spam.texts[2] = "buy now " * 30
    keywords.texts[2] = (
        "digits shapes circles squares triangles pixels colours strokes scans forms postal codes"
    )
    click.texts[4] = "Click here."
    banner = Document(
        "bad-06",
        ["A page with only a banner on it and some words to read here.", None],
        [None, shape_picture("circle", "red", (640, 160))],
    )
    short = base(7)
    short.texts = [None if t is None else "Hello there." for t in short.texts]
    copy, near = base(8), base(9)
    copy.texts = list(docs[13].texts)
    near.texts = list(docs[15].texts)
    near.texts[2] = str(near.texts[2]).replace("the", "this", 1)
    return [
        (with_image(base(0), 1, Picture(_png(_icon()), "png")), None, [(1, "image", "image_too_small")]),
        (
            with_image(base(1), 1, shape_picture("square", "blue", (600, 160))),
            None,
            [(1, "image", "aspect_ratio")],
        ),
        (reused, None, [(1, "image", "duplicate_image"), (4, "image", "duplicate_image")]),
        (spam, None, [(2, "text", "paragraph_character_repetition")]),
        (keywords, None, [(2, "text", "paragraph_few_stop_words")]),
        (click, None, [(4, "text", "paragraph_too_few_words")]),
        (banner, ("document_filters", "too_few_images"), [(1, "image", "aspect_ratio")]),
        (
            short,
            ("document_filters", "document_too_few_words"),
            [(i, "text", "paragraph_too_few_words") for i in (0, 2, 4)],
        ),
        (copy, ("exact_dedup", "duplicate_document"), []),
        (near, ("near_dedup", "near_duplicate_document"), []),
    ]


def _icon() -> object:
    from PIL import Image

    return Image.new("RGB", (40, 40), (10, 120, 200))


def _append_unreadable(shard: Path, corpus: DemoCorpus) -> None:
    """A document with broken JSON and one naming an image it lacks, at the end of the last shard."""
    body = document_json(Document("bad-11", ["text", None], [None, Picture(b"", "png")]))
    members = [("bad-10.json", b"{not json"), ("bad-11.json", json.dumps(body).encode("utf-8"))]
    with tarfile.open(shard, "a") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    corpus.keys += ["bad-10", "bad-11"]
    corpus.planted.update({"bad-10": ("read", "bad_json"), "bad-11": ("read", "missing_image")})
