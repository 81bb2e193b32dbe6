"""Tiny benchmarks written in their exact public layouts, with real images (scikit-learn's handwritten
digits, the images the debug runs train on): an ImageNet-style class-folder tree, a Karpathy split file,
SugarCrepe files and an ARO annotation file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_image(index: int, side: int = 32) -> tuple[Any, int]:
    """(the ``index``-th digit as a ``side`` x ``side`` RGB PIL image, its label)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = (raw.images[index] / 16.0 * 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((side, side)).convert("RGB"), int(raw.target[index])


def write_image_folder(root: Path, count: int, start: int = 1000) -> dict[str, str]:
    """root/n0000000<label>/<i>.JPEG|png for ``count`` digits (ImageNet's synset-like folder names);
    returns {folder: class name}."""
    folders = {f"n{label:08d}": name for label, name in enumerate(NAMES)}
    for i in range(start, start + count):
        image, label = digit_image(i)
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".JPEG" if i % 2 else ".png"  # ImageNet's upper-case suffix and another format
        image.save(folder / f"img_{i:05d}{suffix}", quality=95)
    return folders


def digit_caption(label: int, variant: int, index: int) -> str:
    """One of five captions of the ``index``-th digit (Karpathy files hold five sentences per image); the
    index, spelled out, keeps every caption distinct, as a real data set's are (equal captions tie in
    retrieval)."""
    forms = ["a handwritten {}", "the number {}", "a photo of the number: {}", "a {} written by hand", "{}"]
    spelled = " ".join(NAMES[int(d)] for d in str(index))  # words a digits tokenizer knows
    return forms[variant % len(forms)].format(NAMES[label]) + f", image {spelled}."


def write_karpathy(root: Path, count: int, coco: bool = True, start: int = 1200) -> Path:
    """A Karpathy split file over ``count`` digits, the last quarter in split ``test`` after a ``train``
    part: COCO's layout (filepath val2014/, cocoid; the first test image with a sixth sentence) or
    Flickr30k's (no filepath, imgid). Returns the split file's path."""
    folder = root / "val2014" if coco else root / "flickr30k-images"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for k, i in enumerate(range(start, start + count)):
        image, label = digit_image(i)
        name = f"COCO_val2014_{i:012d}.jpg" if coco else f"{1000 + i}.jpg"
        image.save(folder / name, quality=95)
        test = k >= count // 4
        sentences = [digit_caption(label, v, i) for v in range(6 if test and k == count // 4 else 5)]
        record: dict[str, Any] = {
            "filename": name,
            "split": "test" if test else "train",
            "sentences": [{"raw": s, "tokens": s.strip(".").split()} for s in sentences],
            "sentids": list(range(5 * k, 5 * k + len(sentences))),
        }
        record |= {"filepath": "val2014", "cocoid": i} if coco else {"imgid": k}
        records.append(record)
    path = root / ("dataset_coco.json" if coco else "dataset_flickr30k.json")
    path.write_text(json.dumps({"images": records, "dataset": "coco" if coco else "flickr30k"}))
    return path


def write_sugarcrepe(root: Path, count: int, start: int = 1400) -> list[Path]:
    """Two SugarCrepe files (swap_att.json, replace_obj.json) over ``count`` COCO-named digit images in
    root/val2017: each item's caption names its digit, the negative another digit."""
    images = root / "val2017"
    images.mkdir(parents=True, exist_ok=True)
    files = []
    for offset, stem in enumerate(("replace_obj", "swap_att")):
        items = {}
        for k, i in enumerate(range(start, start + count)):
            image, label = digit_image(i)
            name = f"{i:012d}.jpg"
            image.save(images / name, quality=95)
            other = (label + 1 + offset + k) % 10 or (label + 5) % 10
            negative = other if other != label else (label + 3) % 10
            items[str(k)] = {
                "filename": name,
                "caption": f"a handwritten {NAMES[label]}.",
                "negative_caption": f"a handwritten {NAMES[negative]}.",
            }
        files.append(root / f"{stem}.json")
        files[-1].write_text(json.dumps(items))
    return files


def write_aro(root: Path, count: int, attribution: bool = False, start: int = 1600) -> Path:
    """ARO's layout: root/images/<id>.jpg (a 96x64 canvas of noise with the digit pasted at an offset)
    and visual_genome_relation.json (or _attribution.json), each item boxed on its digit."""
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for k, i in enumerate(range(start, start + count)):
        digit, label = digit_image(i)
        canvas = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        x, y = 8 + 4 * (k % 8), 4 + 2 * (k % 5)
        canvas.paste(digit, (x, y))
        name = f"{2300000 + i}.jpg"
        canvas.save(images / name, quality=95)
        negative = (label + 1 + k % 9) % 10
        record: dict[str, Any] = {
            "image_id": str(2300000 + i),
            "image_path": name,
            "bbox_x": x,
            "bbox_y": y,
            "bbox_w": 32,
            "bbox_h": 32,
            "true_caption": f"a handwritten {NAMES[label]}.",
            "false_caption": f"a handwritten {NAMES[negative]}.",
        }
        if attribution:
            record["attributes"] = ["small", "white"] if k % 2 else ["white", "small"]
        else:
            record["relation_name"] = ["on", "next to", "above"][k % 3]
        records.append(record)
    path = root / ("visual_genome_attribution.json" if attribution else "visual_genome_relation.json")
    path.write_text(json.dumps(records))
    return path
