"""WebDataset tar shards as an indexed, map-style source (``data.kind: webdataset``).

Why an index and not a streaming ``webdataset.WebDataset`` pipeline: a stream can only be shuffled
within a buffer, split across ranks and workers by whole shards (so each rank needs as many shards as
it has workers, and epochs end unevenly), and resumed by replaying it. With an index of
``(shard, image offset, size, caption)`` built once from the tar headers (``shards``, cached), every
sample is addressable by position, so the same ``GlobalBatchSampler`` as every other source gives a
full seeded permutation per epoch, the exact-once split across ranks and workers whatever the shard
count, and mid-epoch resume by position. Reading a sample is one ``pread`` of its image bytes.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vlmforge.config.schema import WebDatasetData
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.images import ImageError, decode_rgb, square_tensor
from vlmforge.data.shards import ShardIndex, index_shard, resolve_shards


def read_member(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``: one positioned read, safe in forked DataLoader workers."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


class ShardImages:
    """Global sample index -> decoded image: the ``load_image`` of a webdataset source (picklable)."""

    def __init__(self, indexes: list[ShardIndex], min_side: int) -> None:
        self.paths = [str(ix.path) for ix in indexes]
        self.shard = np.concatenate([np.full(len(ix.samples), s, np.int32) for s, ix in enumerate(indexes)])
        self.keys = [key for ix in indexes for key, *_ in ix.samples]
        self.offset = np.asarray([s[2] for ix in indexes for s in ix.samples], dtype=np.int64)
        self.size = np.asarray([s[3] for ix in indexes for s in ix.samples], dtype=np.int64)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.keys)

    def pil(self, i: int) -> object:
        """The decoded RGB PIL image of sample ``i``; BadSample (naming shard and key) if unusable."""
        path, size = self.paths[self.shard[i]], int(self.size[i])
        data = read_member(path, int(self.offset[i]), size)
        try:
            if len(data) < size:
                raise ImageError("truncated", f"{len(data)} of {size} bytes (the shard changed?)")
            return decode_rgb(data, self.min_side)
        except ImageError as exc:
            raise BadSample(Drop(path, self.keys[i], exc.reason, exc.detail)) from None


class SquareImages:
    """``load_image`` for training: decode, resize the short side, centre-crop, normalise."""

    def __init__(self, images: ShardImages, size: int, mean: tuple, std: tuple) -> None:
        self.images, self.size = images, size
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, i: int) -> torch.Tensor:
        return square_tensor(self.images.pil(i), self.size, self.mean, self.std)


def open_shards(cfg: WebDatasetData) -> tuple[list[ShardIndex], ShardImages]:
    indexes = [index_shard(path) for path in resolve_shards(cfg.shards)]
    return indexes, ShardImages(indexes, cfg.min_image_size)


def webdataset_set(cfg: WebDatasetData) -> ImageTextSet:
    indexes, images = open_shards(cfg)
    names = [ix.path.name for ix in indexes]
    listing = "\n".join(
        f"{n}\t{key}\t{size}\t{caption}"
        for n, ix in zip(names, indexes, strict=True)
        for key, _, _, size, caption in ix.samples
    )
    return ImageTextSet(
        name=indexes[0].path.parent.name or "webdataset",
        keys=[f"{n}:{key}" for n, ix in zip(names, indexes, strict=True) for key, *_ in ix.samples],
        captions=[[s[4]] for ix in indexes for s in ix.samples],
        load_image=SquareImages(images, cfg.image_size, cfg.mean, cfg.std),
        fingerprint=fingerprint_bytes(listing.encode()),
        rejected=[d for ix in indexes for d in ix.dropped],
    )
