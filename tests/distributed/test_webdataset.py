"""WebDataset shards: index, security, accounting, exact-once splitting, `data check`, and a pretrain
run that stops above data.max_bad_fraction and completes below it. The shards are real tar files of
sklearn digits (PNG, JPEG, WebP) with planted problems."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DEBUG_RECIPE, last_json, run_cli

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


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _encoded(pixels: np.ndarray, fmt: str, side: int = 24) -> bytes:
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
                image = _encoded(pixels, fmt, side=4 if PLANTED.get(i) == "too_small" else 24)
                if PLANTED.get(i) == "decode_error":
                    image = b"these bytes are no image format at all" * 8
                elif PLANTED.get(i) == "truncated":
                    ext, image = "png", _encoded(pixels, "PNG")
                    image = image[: len(image) // 2]
                caption = "" if PLANTED.get(i) == "bad_caption" else f"a handwritten {NAMES[raw.target[i]]}."
                if i != 70:
                    _add(tar, f"{key}.{ext}", image)
                    written["images"][key] = image
                if i != 10:
                    _add(tar, f"{key}.txt", caption.encode())
                    written["captions"][key] = caption
                _add(tar, f"{key}.json", json.dumps({"key": key}).encode())
    return written


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("shards")
    return root, write_shards(root)


def _pretrain(root: Path, max_bad_fraction: float, cwd: Path, *args: str, workers: int = 0) -> Any:
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


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_ranks_sum_their_counts(shards: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """2 DDP processes x 2 loader workers: one epoch read once in all, drops counted once."""
    ddp = ("train.devices=2", "train.strategy.kind=ddp")
    proc = _pretrain(shards[0], 0.05, tmp_path / "ddp", *ddp, workers=2)
    assert proc.returncode == 0, proc.stderr
    data = last_json(proc.stdout)["metrics"]["data"]
    assert (data["read"], data["kept"]) == (160, 157)
    assert data["dropped"] == {"decode_error": 1, "truncated": 1, "too_small": 1}
