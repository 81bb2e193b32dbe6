"""Tiny benchmarks written in their exact public layouts, with real images (scikit-learn's handwritten
digits, the images the debug runs train on): an ImageNet-style class-folder tree, a Karpathy split file,
SugarCrepe files and an ARO annotation file."""

from __future__ import annotations

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
