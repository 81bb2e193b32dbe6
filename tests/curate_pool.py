"""A small real-image pool for the curation tests and benchmark, built offline: sklearn digits, the photos
that ship with scikit-image and sklearn, captions of varied quality and language, exact and near
duplicates, rendered-text images, tiny and extreme-aspect images, corrupt and truncated files.

``planted`` maps each problem sample's key to the (stage, reason) the test recipe must drop it with.
``save_random_clip`` writes the randomly initialised open_clip scorer the recipe's model steps use."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_TEMPLATES = [
    "a handwritten digit {} written in dark ink",
    "a scanned photo of the handwritten number {}",
    "the number {} drawn by hand in black ink on white paper",
]
PHOTOS = {  # scikit-image / sklearn image -> an English caption
    "astronaut": "an astronaut in a white space suit posing in front of an american flag",
    "coffee": "a cup of coffee with a saucer and a spoon on a table",
    "chelsea": "a ginger tabby cat sitting and looking to the side",
    "rocket": "a rocket launching into the sky with smoke and flames",
    "camera": "a black and white photo of a man standing behind a camera on a tripod",
    "coins": "a collection of old coins laid out on a grey background",
    "hubble_deep_field": "a deep field image of distant galaxies in space",
    "immunohistochemistry": "a microscope image of stained tissue cells",
    "moon": "the surface of the moon covered with many craters",
    "colorwheel": "a colour wheel showing the colours of the rainbow",
    "retina": "a medical photograph of the retina of a human eye",
    "china": "a chinese temple with a pagoda roof behind green trees",
    "flower": "a pink flower with yellow pollen in the middle",
}
TEXT_CAPTIONS = ["big summer sale today only", "welcome to the grand hotel"]  # drawn as 3 lines


@dataclass
class Pool:
    root: Path
    shards: str  # brace pattern
    targets: Path  # held-out digit images: the target set of image-based sampling
    keys: list[str] = field(default_factory=list)  # every readable key, input order
    kind: dict[str, str] = field(default_factory=dict)  # key -> digit | photo | ...
    planted: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (stage, reason)
    digit_label: dict[str, int] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: object, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)  # type: ignore[attr-defined]
    return buffer.getvalue()


def digit_image(pixels: np.ndarray, side: int = 64) -> np.ndarray:
    from PIL import Image

    grey = (pixels / 16.0 * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grey, mode="L").resize((side, side), Image.Resampling.NEAREST))


def photo(name: str, short_side: int = 128) -> object:
    from PIL import Image

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
    image = Image.fromarray(array).convert("RGB")
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)


def rendered_text(text: str, size: tuple[int, int] = (192, 128), background: object = None) -> object:
    """The caption drawn large on a plain canvas (or in a banner on ``background``)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", size, (250, 250, 245)) if background is None else background.copy()  # type: ignore[attr-defined]
    draw = ImageDraw.Draw(canvas)
    if background is None:
        font = ImageFont.load_default(size=38)
        words = text.split()
        lines = [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
        for i, line in enumerate(lines):
            draw.text((4, 2 + 42 * i), line, fill=(20, 20, 20), font=font)
    else:
        font = ImageFont.load_default(size=14)
        box = draw.textbbox((6, 6), text, font=font)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(255, 255, 255))
        draw.text((6, 6), text, fill=(0, 0, 0), font=font)
    return canvas


def build_pool(root: Path, shards: int = 4, extra_digits: int = 0) -> Pool:
    """Write the pool as ``shards`` tar files under ``root`` and the target set under root/targets."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    pool = Pool(root, str(root / f"pool-{{0000..{shards - 1:04d}}}.tar"), root / "targets")
    members: list[list[tuple[str, bytes]]] = []  # one sample's tar members each

    def add(
        key: str,
        kind: str,
        image: bytes | None,
        ext: str,
        caption: str | None,
        planted: tuple[str, str] | None = None,
    ) -> None:
        files = [] if image is None else [(f"{key}.{ext}", image)]
        if caption is not None:
            files.append((f"{key}.txt", caption.encode("utf-8")))
        files.append((f"{key}.json", json.dumps({"key": key, "kind": kind}).encode("utf-8")))
        members.append(files)
        pool.kind[key] = kind
        if planted:
            pool.planted[key] = planted
        if caption is not None:
            pool.captions[key] = caption
        if planted is None or planted[0] != "read":
            pool.keys.append(key)

    order = iter(range(len(digits.target)))
    for n in range(24 + extra_digits):  # well-captioned English digits
        i = next(order)
        key = f"digit-{n:03d}"
        caption = DIGIT_TEMPLATES[n % 3].format(DIGIT_NAMES[digits.target[i]])
        add(key, "digit", _png(digit_image(digits.images[i])), "png", caption)
        pool.digit_label[key] = int(digits.target[i])
    for name, caption in PHOTOS.items():
        add(f"photo-{name}", "photo", _jpeg(photo(name)), "jpg", caption)

    bad_captions = {
        "img": ("caption_length", "caption_too_short"),
        " ".join(["a very long caption that keeps going on and on"] * 8): (
            "caption_length",
            "too_many_words",
        ),
        "the of and a it is": ("caption_complexity", "too_few_concepts"),
        "buy now buy now buy now buy now cheap cheap": ("repeated_tokens", "repeated_tokens"),
        "eine handgeschriebene Ziffer sieben auf weißem Papier": ("language", "other_language"),
        "un chiffre sept écrit à la main sur du papier blanc": ("language", "other_language"),
        "xqzv blorft mnekj wqpx zzkt": ("language", "uncertain_language"),
    }
    for n, (caption, planted) in enumerate(bad_captions.items()):
        i = next(order)
        add(f"badcap-{n:02d}", "bad_caption", _png(digit_image(digits.images[i])), "png", caption, planted)

    i = next(order)
    add(
        "tiny-00",
        "tiny",
        _png(digit_image(digits.images[i], side=8)),
        "png",
        "a tiny handwritten digit image",
        ("image_size", "image_too_small"),
    )
    strip = photo("astronaut").crop((0, 40, 128, 56)).resize((320, 40))  # type: ignore[attr-defined]
    add(
        "strip-00",
        "strip",
        _jpeg(strip),
        "jpg",
        "a thin strip cut from a photo of an astronaut",
        ("image_size", "aspect_ratio"),
    )
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    add(
        "large-00",
        "large",
        _png(noise),
        "png",
        "colourful random noise pixels everywhere",
        ("file_size", "file_too_large"),
    )

    coffee = _jpeg(photo("coffee"))
    add(
        "dup-coffee",
        "duplicate",
        coffee,
        "jpg",
        "another cup of hot coffee on a saucer",
        ("exact_dedup", "duplicate"),
    )
    rocket = photo("rocket")
    smaller = rocket.resize((round(rocket.width * 0.9), round(rocket.height * 0.9)))  # type: ignore[attr-defined]
    add(
        "near-rocket",
        "near_duplicate",
        _jpeg(smaller, quality=50),
        "jpg",
        "a space rocket lifting off from the launch pad",
        ("near_dedup", "near_duplicate"),
    )
    brighter = np.clip(digit_image(digits.images[0]).astype(int) + 12, 0, 255).astype(np.uint8)
    add(
        "near-digit",
        "near_duplicate",
        _png(brighter),
        "png",
        "a handwritten digit zero drawn with a pen",
        ("near_dedup", "near_duplicate"),
    )

    for n, text in enumerate(TEXT_CAPTIONS):
        add(
            f"text-{n:02d}",
            "text",
            _jpeg(rendered_text(text)),
            "jpg",
            text + " poster",
            ("text_spotting", "text_dominated"),
        )
    add(
        "banner-00",
        "banner",
        _jpeg(rendered_text("a ginger cat", background=photo("chelsea").rotate(180))),
        "jpg",
        "a photo of a ginger cat lying upside down on the floor",
    )

    truncated = _jpeg(photo("moon"))
    corrupt = {
        "corrupt-00": (
            "jpg",
            np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
            "random bytes",
            "decode_error",
        ),
        "truncated-00": (
            "jpg",
            truncated[: len(truncated) * 6 // 10],
            "half of a moon photo",
            "truncated_image",
        ),
    }
    for key, (ext, data, caption, reason) in corrupt.items():
        add(key, "corrupt", data, ext, caption, ("read", reason))
    add("nocaption-00", "corrupt", coffee, "jpg", None, ("read", "missing_caption"))
    add("noimage-00", "corrupt", None, "jpg", "a caption without its image", ("read", "missing_image"))

    # contiguous runs of samples per shard (input order = creation order); an unsafe member ends the last
    bounds = np.linspace(0, len(members), shards + 1).round().astype(int)
    for s in range(shards):
        with tarfile.open(root / f"pool-{s:04d}.tar", "w") as tar:
            for files in members[bounds[s] : bounds[s + 1]]:
                for name, data in files:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            if s == shards - 1:
                info = tarfile.TarInfo("../escape.jpg")
                info.size = len(coffee)
                tar.addfile(info, io.BytesIO(coffee))
    pool.planted["../escape.jpg"] = ("read", "unsafe_path")

    pool.targets.mkdir(exist_ok=True)
    for n in range(20):  # held-out digits (the end of the set), never in the pool
        i = len(digits.target) - 1 - n
        (pool.targets / f"target-{n:02d}.png").write_bytes(_png(digit_image(digits.images[i])))
    return pool


TINY_CLIP = {  # open_clip config of a 1-layer, 32-px ViT: a scorer that costs next to nothing
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "layers": 1,
        "width": 32,
        "patch_size": 8,
        "head_width": 16,
        "pool_type": "avg",
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_random_clip(root: Path, arch: str = "tiny-clip") -> dict[str, Path]:
    """An open_clip ``arch`` with random weights (seed 0) saved under ``root``: its ``checkpoint`` and, for
    'tiny-clip' (``TINY_CLIP``, registered with open_clip here), its ``config`` JSON — the curate recipe's
    model.checkpoint and model.config."""
    import open_clip
    import torch

    files: dict[str, Path] = {}
    if arch == "tiny-clip":
        files["config"] = root / "tiny-clip.json"
        files["config"].write_text(json.dumps(TINY_CLIP))
        open_clip.add_model_config(files["config"])
    torch.manual_seed(0)
    files["checkpoint"] = root / f"{arch}.pt"
    torch.save(open_clip.create_model(arch, pretrained=None).state_dict(), files["checkpoint"])
    return files


def size_captioner(prefix: str = "a picture") -> object:
    """A captioner test double for the re-captioning hook: describes each image by its size."""

    def caption(images: list[object], captions: list[str]) -> list[str]:
        return [f"{prefix} of {image.width} by {image.height} pixels" for image in images]  # type: ignore[attr-defined]

    return caption


# ------------------------------------------------------------------------- recipes and outputs
def make_recipe(tmp_path: Path, source: Any, steps: list[dict[str, Any]], **extra: Any) -> Any:
    """A curation recipe (``CurateRecipe``) over ``source`` writing to ``tmp_path/out``."""
    from vlmforge.config.curate import CurateRecipe

    data = {"name": "t", "input": source, "output": str(tmp_path / "out"), "steps": steps, **extra}
    return CurateRecipe.model_validate(data)


def chunk_of(images: list[Any], captions: list[str]) -> Any:
    """A shard chunk (``curate.io.Chunk``) holding ``images`` and their captions."""
    from vlmforge.curate.io import Chunk

    return Chunk(
        keys=[f"k{i}" for i in range(len(images))],
        captions=captions,
        images=images,
        raw=[b""] * len(images),
        width=np.array([i.width for i in images]),
        height=np.array([i.height for i in images]),
        nbytes=np.zeros(len(images), dtype=np.int64),
    )


def report_of(output: Path) -> dict[str, Any]:
    return json.loads((output / "report.json").read_text())


def dropped_of(output: Path) -> dict[str, tuple[str, str]]:
    lines = (output / "dropped.jsonl").read_text().splitlines()
    return {(row := json.loads(line))["key"]: (row["stage"], row["reason"]) for line in lines}


def shard_samples(output: Path) -> dict[str, dict[str, Any]]:
    """Every sample of the output shards, read with webdataset: key -> {txt, json, image ext}."""
    import webdataset as wds

    found = {}
    for shard in sorted((output / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            ext = next(e for e in ("jpg", "png") if e in sample)
            found[sample["__key__"]] = {
                "txt": sample["txt"].decode(),
                "json": json.loads(sample["json"]),
                "ext": ext,
                "image": sample[ext],
            }
    return found


def recipe_of(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Any:
    """A curation recipe whose input defaults to a (not yet written) shard ``x.tar``."""
    source = extra.pop("input", {"kind": "webdataset", "shards": "x.tar"})
    return make_recipe(tmp_path, source, steps, **extra)


def digit() -> Any:
    """One sklearn digit as an RGB photo-sized image."""
    from PIL import Image
    from sklearn.datasets import load_digits

    return Image.fromarray(digit_image(load_digits().images[3])).convert("RGB")
