"""`vlmforge data check`: read every sample of a shard set or a folder before a run, with no GPU.

Indexes the shards or the folder's captions file (pairing, caption and path problems), decodes and
transforms every image as training would (decode errors, truncated and too-small images), and reports
counts, image sizes, caption lengths, every dropped sample by shard and key, and the decode + transform
throughput measured here.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import FolderData, WebDatasetData
from vlmforge.data.accounting import BadSample, Drop, count_reasons, over_budget
from vlmforge.data.folder import open_folder
from vlmforge.data.images import ImageError, decode_rgb, square_tensor
from vlmforge.data.webds import open_shards


def stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "mean": round(float(array.mean()), 2),
        "max": float(array.max()),
    }


@dataclass
class CheckReport:
    shards: list[dict[str, Any]]  # per shard: path, entries, kept, dropped
    entries: int  # everything the shards hold: kept + dropped
    dropped: list[Drop]
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    caption_chars: list[int] = field(default_factory=list)
    caption_words: list[int] = field(default_factory=list)
    decoded: int = 0  # images read and decoded (kept or dropped then)
    decode_seconds: float = 0.0
    workers: int = 0
    max_bad_fraction: float = 0.01

    @property
    def kept(self) -> int:
        return self.entries - len(self.dropped)

    @property
    def images_per_s(self) -> float:
        """Decode + transform rate of one process here (each read image, kept or not)."""
        decoded = self.kept + sum(
            d.reason in ("decode_error", "truncated", "too_small") for d in self.dropped
        )
        return decoded / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def estimated_loader_images_per_s(self) -> float:
        """The one-process rate times the loader processes that can run at once on this machine."""
        return self.images_per_s * max(1, min(self.workers, os.cpu_count() or 1))

    @property
    def over_budget(self) -> bool:
        return over_budget(len(self.dropped), self.entries, self.max_bad_fraction)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "kept": self.kept,
            "dropped": count_reasons(d.reason for d in self.dropped),
            "bad_fraction": round(len(self.dropped) / max(self.entries, 1), 6),
            "max_bad_fraction": self.max_bad_fraction,
            "over_budget": self.over_budget,
            "image_width": stats(self.widths),
            "image_height": stats(self.heights),
            "caption_chars": stats(self.caption_chars),
            "caption_words": stats(self.caption_words),
            "images_per_s": round(self.images_per_s, 1),
            "loader_workers": self.workers,
            "cpu_count": os.cpu_count(),
            "estimated_loader_images_per_s": round(self.estimated_loader_images_per_s, 1),
            "shards": self.shards,
            "bad_samples": [d.to_json() for d in self.dropped],
        }


@dataclass
class Opened:
    """A source opened for checking: its units (shards, or the folder), the usable samples (unit, key,
    caption, and ``pil`` reading one or raising ``BadSample``) and the entries dropped when opened, with
    the unit each belongs to."""

    units: list[str]
    unit_of: list[int]  # per usable sample: its unit's position in ``units``
    keys: list[str]
    captions: list[str]
    pil: Callable[[int], Any]
    dropped: list[Drop]
    dropped_unit: list[int]


def check_source(cfg: WebDatasetData | FolderData) -> CheckReport:
    """Open and read every sample of a shard set or a folder; nothing is skipped or sampled."""
    opened = _open_folder(cfg) if isinstance(cfg, FolderData) else _open_shards(cfg)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    read_drops: dict[int, Drop] = {}
    report = CheckReport([], 0, [], workers=cfg.num_workers, max_bad_fraction=cfg.max_bad_fraction)
    start = time.perf_counter()
    for i in range(len(opened.keys)):
        try:
            img = opened.pil(i)
        except BadSample as bad:
            read_drops[i] = bad.drop
            continue
        square_tensor(img, cfg.image_size, mean, std)  # timed as training would transform it
        report.widths.append(img.width)
        report.heights.append(img.height)
    report.decode_seconds, report.decoded = time.perf_counter() - start, len(opened.keys)
    entries = Counter(opened.unit_of) + Counter(opened.dropped_unit)
    bad = Counter(opened.dropped_unit) + Counter(opened.unit_of[i] for i in read_drops)
    for u, unit in enumerate(opened.units):
        report.shards.append(
            {"shard": unit, "entries": entries[u], "kept": entries[u] - bad[u], "dropped": bad[u]}
        )
    report.entries = len(opened.keys) + len(opened.dropped)
    report.dropped = sorted([*opened.dropped, *read_drops.values()], key=lambda d: (d.shard, d.key))
    for i, caption in enumerate(opened.captions):
        if i not in read_drops:
            report.caption_chars.append(len(caption))
            report.caption_words.append(len(caption.split()))
    return report


def _open_shards(cfg: WebDatasetData) -> Opened:
    indexes, images = open_shards(cfg)
    return Opened(
        units=[str(ix.path) for ix in indexes],
        unit_of=[u for u, ix in enumerate(indexes) for _ in ix.samples],
        keys=[key for ix in indexes for key, *_ in ix.samples],
        captions=[s[4] for ix in indexes for s in ix.samples],
        pil=images.pil,
        dropped=[d for ix in indexes for d in ix.dropped],
        dropped_unit=[u for u, ix in enumerate(indexes) for _ in ix.dropped],
    )


def _open_folder(cfg: FolderData) -> Opened:
    index = open_folder(cfg)
    root = str(index.root)

    def pil(i: int) -> Any:
        try:
            return decode_rgb(index.files[i])
        except ImageError as exc:
            raise BadSample(Drop(root, index.rows[i].image, exc.reason, exc.detail)) from None

    return Opened(
        units=[root],
        unit_of=[0] * len(index.rows),
        keys=[row.image for row in index.rows],
        captions=[row.caption for row in index.rows],
        pil=pil,
        dropped=index.dropped,
        dropped_unit=[0] * len(index.dropped),  # the captions file's bad lines too
    )
