"""Shard formats: compressed (JPEG, quality 90) vs uncompressed (raw uint8 HxWx3 arrays saved as .npy)
WebDataset shards holding the same images.

Per format: bytes on disk, and images/s on one core (OMP_NUM_THREADS=1, one process) for
- decode: read the tar member and turn it into a uint8 RGB array (PIL for JPEG, ``np.load`` for .npy);
- decode + transform: then vlmforge's training transform (``square_tensor``: short side to 224 bicubic,
  centre crop, normalise), what a loader worker does per sample.
The images are crops (256-384 px sides) of sklearn's two sample photos, as in ``loader.py``. Formats
alternate within each repetition (page cache warm for both: the first pass is not timed).

    OMP_NUM_THREADS=1 python benchmarks/shard_formats.py [--images 512] [--reps 5]

Writes benchmarks/results/shard_formats.json and prints the raw / JPEG ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import write_result
from vlmforge.config.schema import OPENAI_MEAN, OPENAI_STD
from vlmforge.data.images import square_tensor

SIDE, PER_SHARD = 224, 128


def crops(images: int, seed: int = 0) -> list[np.ndarray]:
    """``images`` random crops (256-384 px sides) of sklearn's sample photos, uint8 HxWx3."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(images):
        photo = photos[i % len(photos)]
        w, h = (int(v) for v in rng.integers(256, 385, 2))
        x, y = int(rng.integers(0, photo.shape[1] - w)), int(rng.integers(0, photo.shape[0] - h))
        out.append(np.ascontiguousarray(photo[y : y + h, x : x + w]))
    return out


def jpeg_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_shards(
    root: Path, arrays: list[np.ndarray], suffix: str, encode: Callable[[np.ndarray], bytes]
) -> list[Path]:
    """img2dataset-layout shards: ``<key>.<suffix>`` per image, ``PER_SHARD`` per shard."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(arrays), PER_SHARD):
        path = root / f"{start // PER_SHARD:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(start, min(start + PER_SHARD, len(arrays))):
                data = encode(arrays[i])
                info = tarfile.TarInfo(f"{i:08d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def transform(array: np.ndarray) -> torch.Tensor:
    from PIL import Image

    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    return square_tensor(Image.fromarray(array), SIDE, mean, std)


def images_per_s(shards: list[Path], decode: Callable[[bytes], np.ndarray], with_transform: bool) -> float:
    """Read every member of every shard and decode it (then transform it): images per second."""
    count = 0
    started = time.perf_counter()
    for path in shards:
        with tarfile.open(path) as tar:
            for member in tar:
                handle = tar.extractfile(member)
                assert handle is not None
                array = decode(handle.read())
                if with_transform:
                    transform(array)
                count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]  # other jobs on the machine slow every number here alike
    arrays = crops(args.images)
    formats: dict[str, dict[str, Any]] = {
        "jpeg": {"suffix": "jpg", "encode": jpeg_bytes, "decode": decode_jpeg},
        "raw_uint8": {"suffix": "npy", "encode": npy_bytes, "decode": decode_npy},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in formats.items():
            spec["shards"] = write_shards(Path(tmp) / name, arrays, spec["suffix"], spec["encode"])
            spec["bytes"] = sum(p.stat().st_size for p in spec["shards"])
            images_per_s(spec["shards"], spec["decode"], False)  # warm the page cache, not timed
        times: dict[str, dict[str, list[float]]] = {
            n: {"decode": [], "decode_transform": []} for n in formats
        }
        for rep in range(args.reps):
            order = list(formats) if rep % 2 == 0 else list(reversed(formats))
            for name in order:
                spec = formats[name]
                times[name]["decode"].append(images_per_s(spec["shards"], spec["decode"], False))
                times[name]["decode_transform"].append(images_per_s(spec["shards"], spec["decode"], True))
    results = {
        name: {
            "bytes_on_disk": formats[name]["bytes"],
            "bytes_per_image": round(formats[name]["bytes"] / args.images),
            **{f"{stage}_images_per_s": round(statistics.median(v), 1) for stage, v in stages.items()},
            **{f"{stage}_runs": [round(x, 1) for x in v] for stage, v in stages.items()},
        }
        for name, stages in times.items()
    }
    raw, jpeg = results["raw_uint8"], results["jpeg"]
    ratios = {
        "disk_raw_over_jpeg": round(raw["bytes_on_disk"] / jpeg["bytes_on_disk"], 2),
        "decode_raw_over_jpeg": round(raw["decode_images_per_s"] / jpeg["decode_images_per_s"], 2),
        "decode_transform_raw_over_jpeg": round(
            raw["decode_transform_images_per_s"] / jpeg["decode_transform_images_per_s"], 2
        ),
    }
    payload = {
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # before, after
        "images": args.images,
        "reps": args.reps,
        "image_sides_px": "256-384",
        "jpeg_quality": 90,
        "transform": f"square_tensor({SIDE}) bicubic + centre crop + normalise",
        "formats": results,
        "ratios": ratios,
    }
    path = write_result("shard_formats", payload)
    for name, result in results.items():
        print(
            f"{name:10s} {result['bytes_on_disk'] / 1e6:8.1f} MB  "
            f"decode {result['decode_images_per_s']:8.1f} img/s  "
            f"decode+transform {result['decode_transform_images_per_s']:7.1f} img/s (one core)"
        )
    print(f"raw / jpeg: {ratios}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
