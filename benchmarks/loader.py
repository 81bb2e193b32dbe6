"""Data loading: vlmforge's webdataset loader vs a plain `webdataset.WebDataset` pipeline.

Both read the same tar shards (JPEG crops of sklearn's two sample photos, img2dataset layout), decode
with PIL to RGB (webdataset: its ``decode("pilrgb")``, as OpenCLIP does; vlmforge: its own reader), and
apply the same transform (vlmforge's resize short side to 224 bicubic + centre crop + normalise) and
the same cached word tokenizer, batched by the same DataLoader settings, in one process, alternating
order, several repetitions. vlmforge reads in a seeded random order through its
shard index; webdataset streams each shard sequentially (its fastest setting: no shuffle buffer).
The one-time index scan is timed separately, on a cold cache.

    OMP_NUM_THREADS=1 python benchmarks/loader.py [--images 2048] [--reps 5] [--workers 0 2]

With the `ffcv` extra installed, a third column: the same images written to an FFCV .beton at 224 px and
read by vlmforge's ``data.kind: ffcv`` path (FFCV decodes the sampler's micro-batches; the first pass,
which compiles FFCV's pipeline, is not timed); its ratio is to vlmforge's webdataset loader (goal >= 2).

Needs `pip install webdataset` (the baseline). Writes benchmarks/results/loader.json and prints the
ratio vlmforge / webdataset in images/s (goal: >= 1.0).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import write_result
from vlmforge.config.schema import OPENAI_MEAN, OPENAI_STD, WebDatasetData
from vlmforge.data.images import square_tensor
from vlmforge.data.loader import CaptionedImages, GlobalBatchSampler, collate
from vlmforge.data.sources import open_source
from vlmforge.data.tokenizers import WordVocab

SIDE, CONTEXT, PER_SHARD = 224, 16, 256
WORDS = ["a", "photo", "of", "the", "temple", "flower", "in", "china", "close", "up", "red", "roof"]


def write_shards(root: Path, images: int, seed: int = 0) -> list[Path]:
    """``images`` JPEG crops (quality 90, 256-384 px sides) with random captions, 256 per shard."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(0, images, PER_SHARD):
        path = root / f"{shard // PER_SHARD:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(shard, min(shard + PER_SHARD, images)):
                photo = photos[i % len(photos)]
                w, h = (int(v) for v in rng.integers(256, 385, 2))
                x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
                buffer = io.BytesIO()
                photo.crop((x, y, x + w, y + h)).save(buffer, format="JPEG", quality=90)
                caption = " ".join(rng.choice(WORDS, int(rng.integers(4, 10))))
                for name, data in ((f"{i:08d}.jpg", buffer.getvalue()), (f"{i:08d}.txt", caption.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def vlmforge_loader(pattern: str, batch: int, workers: int, vocab: WordVocab) -> Iterable[Any]:
    data = open_source(WebDatasetData(shards=pattern, image_size=SIDE, mean=OPENAI_MEAN, std=OPENAI_STD))
    dataset = CaptionedImages(data, vocab, CONTEXT, seed=0)
    sampler = GlobalBatchSampler(len(data), batch, batch, seed=0)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers
    )


def ffcv_loader(beton: Path, batch: int, workers: int, vocab: WordVocab) -> Iterable[Any]:
    from vlmforge.config.schema import FfcvData
    from vlmforge.data.ffcv import FfcvBatches

    data = open_source(FfcvData(path=beton, image_size=SIDE, mean=OPENAI_MEAN, std=OPENAI_STD))
    dataset = CaptionedImages(data, vocab, CONTEXT, seed=0)
    sampler = GlobalBatchSampler(len(data), batch, batch, seed=0)
    return FfcvBatches(dataset, sampler, beton, workers, (OPENAI_MEAN, OPENAI_STD), lambda: 0)


def write_ffcv(pattern: str, beton: Path) -> bool:
    """The shards as an FFCV file at the training side, if the extra is installed."""
    import importlib.util

    if importlib.util.find_spec("ffcv") is None:
        return False
    from vlmforge.data.ffcv import write_beton

    pixels = WebDatasetData(shards=pattern, image_size=SIDE, mean=(0, 0, 0), std=(1, 1, 1))
    write_beton(open_source(pixels), beton, pixels.mean, pixels.std)
    return True


def webdataset_loader(urls: list[str], batch: int, workers: int, vocab: WordVocab) -> Iterable[Any]:
    import webdataset as wds

    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    cache: dict[str, torch.Tensor] = {}

    def tokens(caption: str) -> torch.Tensor:  # the same per-caption cache CaptionedImages keeps
        if caption not in cache:
            cache[caption] = vocab([caption], CONTEXT)[0]
        return cache[caption]

    pipeline = (  # OpenCLIP's webdataset pipeline, less its shuffle buffers
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pilrgb")
        .to_tuple("jpg;png;webp", "txt")
        .map_tuple(lambda img: square_tensor(img, SIDE, mean, std), tokens)
        .batched(
            batch,
            collation_fn=lambda items: (
                torch.stack([i for i, _ in items]),
                torch.stack([t for _, t in items]),
            ),
        )
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers)


def images_per_s(make: Callable[[], Iterable[Any]]) -> tuple[float, int]:
    """One full pass, loader start-up included: (images/s, images)."""
    start = time.perf_counter()
    count = 0
    for batch in make():
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        count += images.shape[0]
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    try:
        import webdataset
    except ImportError:
        raise SystemExit("the baseline needs webdataset: pip install webdataset") from None
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="vlmforge-loader-bench-") as tmp:
        root = Path(tmp)
        os.environ["VLMFORGE_CACHE"] = str(root / "cache")  # a cold index cache, timed below
        (root / "shards").mkdir()
        paths = write_shards(root / "shards", args.images)
        pattern = str(root / "shards" / f"{{00000..{len(paths) - 1:05d}}}.tar")
        vocab = WordVocab(sorted(WORDS))
        start = time.perf_counter()
        open_source(WebDatasetData(shards=pattern))
        index_seconds = time.perf_counter() - start
        beton = root / "images.beton"
        with_ffcv = write_ffcv(pattern, beton)
        if with_ffcv:
            images_per_s(lambda: ffcv_loader(beton, args.batch, 1, vocab))  # compiles FFCV's pipeline

        rows = []
        for workers in args.workers:
            makers = {
                "vlmforge": lambda w=workers: vlmforge_loader(pattern, args.batch, w, vocab),
                "webdataset": lambda w=workers: webdataset_loader(
                    [str(p) for p in paths], args.batch, w, vocab
                ),
            }
            if with_ffcv:  # FFCV's workers are threads; 0 means one
                makers["ffcv"] = lambda w=workers: ffcv_loader(beton, args.batch, w, vocab)
            runs: dict[str, list[float]] = {name: [] for name in makers}
            for rep in range(args.reps):
                order = list(makers) if rep % 2 == 0 else list(reversed(makers))
                for name in order:
                    rate, count = images_per_s(makers[name])
                    assert count == args.images, f"{name} yielded {count} of {args.images} images"
                    runs[name].append(rate)
            ours, theirs = statistics.median(runs["vlmforge"]), statistics.median(runs["webdataset"])
            # each repetition runs both back to back: the median of those paired ratios is steadier than
            # the ratio of medians when other work shares the machine
            ratio = statistics.median(
                a / b for a, b in zip(runs["vlmforge"], runs["webdataset"], strict=True)
            )
            row = {
                "workers": workers,
                "vlmforge_images_per_s": round(ours, 1),
                "webdataset_images_per_s": round(theirs, 1),
                "ratio": round(ratio, 3),
                "runs": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
            }
            shown = f"workers={workers}: vlmforge {ours:.0f} images/s, webdataset {theirs:.0f} images/s"
            if with_ffcv:
                row["ffcv_images_per_s"] = round(statistics.median(runs["ffcv"]), 1)
                row["ffcv_ratio_to_vlmforge"] = round(
                    statistics.median(a / b for a, b in zip(runs["ffcv"], runs["vlmforge"], strict=True)), 3
                )
                shown += f", ffcv {row['ffcv_images_per_s']:.0f} images/s ({row['ffcv_ratio_to_vlmforge']}x)"
            rows.append(row)
            print(shown + f"; ratio {ratio:.3f} (median of paired repetitions)")

    result = {
        "benchmark": "loader",
        "images": args.images,
        "shards": len(paths),
        "batch": args.batch,
        "image_side": SIDE,
        "reps": args.reps,
        "webdataset": webdataset.__version__,
        "index_seconds_cold": round(index_seconds, 3),
        "rows": rows,
        "ratio": min(r["ratio"] for r in rows),
        "goal": ">= 1.0",
        "ffcv": "measured" if with_ffcv else "not installed (pip install 'vlmforge[ffcv]')",
        "ffcv_goal": ">= 2.0 x vlmforge's webdataset loader",
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    print(f"wrote {write_result('loader', result)}")


if __name__ == "__main__":
    main()
