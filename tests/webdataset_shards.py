"""Real WebDataset shards for the tests: 163 sklearn digits (PNG, JPEG, WebP) in 3 tar files, img2dataset
layout, with planted problems (``PLANTED``) that readers must count, never silently lose."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import DEBUG_RECIPE, run_cli
from vlmforge.config.schema import WebDatasetData

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


ENTRIES, PER_SHARD = 163, 55


# planted problems, by sample number: what each should be counted as
PLANTED = {
    3: "decode_error",  # bytes that are no image
    10: "missing_pair",  # image without caption
    20: "bad_caption",  # empty caption
    60: "truncated",  # PNG cut in half
    70: "missing_pair",  # caption without image
    120: "too_small",  # 4x4 pixels, below min_image_size=8
}


READ_TIME = {"decode_error", "truncated", "too_small"}


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def encoded_image(pixels: np.ndarray, fmt: str, side: int = 24) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").convert("RGB").resize((side, side)).save(buffer, format=fmt)
    return buffer.getvalue()


def write_shards(root: Path) -> dict[str, Any]:
    """163 digit samples in 3 shards (img2dataset layout) with the PLANTED problems; returns what it wrote."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    written: dict[str, Any] = {"images": {}, "captions": {}}
    for shard in range(0, ENTRIES, PER_SHARD):
        with tarfile.open(root / f"{shard // PER_SHARD:05d}.tar", "w") as tar:
            for i in range(shard, min(shard + PER_SHARD, ENTRIES)):
                key, pixels = f"{i:06d}", (raw.images[i] / 16 * 255).astype(np.uint8)
                ext, fmt = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")][i % 3]
                image = encoded_image(pixels, fmt, side=4 if PLANTED.get(i) == "too_small" else 24)
                if PLANTED.get(i) == "decode_error":
                    image = b"these bytes are no image format at all" * 8
                elif PLANTED.get(i) == "truncated":
                    ext, image = "png", encoded_image(pixels, "PNG")
                    image = image[: len(image) // 2]
                caption = "" if PLANTED.get(i) == "bad_caption" else f"a handwritten {NAMES[raw.target[i]]}."
                if i != 70:
                    add_member(tar, f"{key}.{ext}", image)
                    written["images"][key] = image
                if i != 10:
                    add_member(tar, f"{key}.txt", caption.encode())
                    written["captions"][key] = caption
                add_member(tar, f"{key}.json", json.dumps({"key": key}).encode())
    return written


def shards_config(root: Path, **extra: Any) -> WebDatasetData:
    return WebDatasetData(shards=str(root / "{00000..00002}.tar"), image_size=16, **extra)


def pretrain_on_shards(root: Path, max_bad_fraction: float, cwd: Path, *args: str, workers: int = 0) -> Any:
    """`vlmforge pretrain` of the debug recipe, 5 steps, on the shards under ``root`` (in ``cwd``)."""
    data = {
        "kind": "webdataset",
        "shards": [str(root / "{00000..00002}.tar")],
        "image_size": 16,
        "batch_size": 32,
        "num_workers": workers,
        "max_bad_fraction": max_bad_fraction,
    }
    cwd.mkdir()
    return run_cli(
        "pretrain", "-c", str(DEBUG_RECIPE), f"data={json.dumps(data)}", "train.max_steps=5",
        "train.log_every_steps=5", "eval=[]", *args, "--format", "json", cwd=cwd,
    )  # fmt: skip
