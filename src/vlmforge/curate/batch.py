"""What steps see: a ``Batch`` of decoded samples (to measure) and a ``Table`` of measured columns (to
decide on), and what they return: a ``Decision`` (keep mask, reason per sample, scores)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Sample:
    """One input sample as read from a shard, before decoding."""

    key: str
    image: bytes | None
    ext: str
    caption: str | None
    meta: dict[str, Any]
    error: str = ""  # a read-time reason (unsafe path, missing image/caption), "" when readable


@dataclass
class Chunk:
    """Decoded samples of one shard chunk, with a cache of per-row values shared by steps."""

    keys: list[str]
    captions: list[str]
    images: list[Any]  # PIL RGB images (None where decoding failed)
    raw: list[bytes]
    width: np.ndarray
    height: np.ndarray
    nbytes: np.ndarray
    cache: dict[str, dict[int, Any]] = field(default_factory=dict)


class Batch:
    """A row subset of a chunk: what ``Step.measure`` gets. Values computed through ``cached`` are shared
    by every step that asks for the same name (e.g. image embeddings)."""

    def __init__(self, chunk: Chunk, rows: np.ndarray) -> None:
        self.chunk = chunk
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def keys(self) -> list[str]:
        return [self.chunk.keys[r] for r in self.rows]

    @property
    def captions(self) -> list[str]:
        return [self.chunk.captions[r] for r in self.rows]

    @property
    def images(self) -> list[Any]:
        return [self.chunk.images[r] for r in self.rows]

    @property
    def raw(self) -> list[bytes]:
        return [self.chunk.raw[r] for r in self.rows]

    @property
    def width(self) -> np.ndarray:
        return self.chunk.width[self.rows]

    @property
    def height(self) -> np.ndarray:
        return self.chunk.height[self.rows]

    @property
    def nbytes(self) -> np.ndarray:
        return self.chunk.nbytes[self.rows]

    def cached(self, name: str, compute: Callable[[Batch], np.ndarray]) -> np.ndarray:
        """``compute(batch)`` for the rows not computed under ``name`` yet; stacked for these rows."""
        store = self.chunk.cache.setdefault(name, {})
        missing = np.array([r for r in self.rows if r not in store], dtype=np.int64)
        if len(missing):
            store.update(zip(missing.tolist(), compute(Batch(self.chunk, missing)), strict=True))
        values = [store[r] for r in self.rows.tolist()]
        if values and isinstance(values[0], np.ndarray):
            return np.stack(values)
        stacked = np.empty(len(values), dtype=object)  # ragged values (e.g. lists of boxes)
        for i, value in enumerate(values):
            stacked[i] = value
        return stacked


@dataclass
class Table:
    """Measured columns of the samples a step decides on, in input order (all shards for global steps)."""

    keys: np.ndarray
    columns: dict[str, np.ndarray]
    seed: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass
class Decision:
    """A step's verdict: keep mask, the reason of each dropped row ("" when kept), and scores."""

    keep: np.ndarray
    reason: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # step-level facts for the report
    texts: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample strings for the sample's JSON

    @classmethod
    def from_reasons(cls, reason: np.ndarray, **scores: np.ndarray) -> Decision:
        reason = np.asarray(reason, dtype=object)
        return cls(keep=reason == "", reason=reason, scores=dict(scores))


def first_reason(n: int, rules: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """Per row, the reason of the first rule whose mask is true ("" if none): vectorised rule lists."""
    reason = np.full(n, "", dtype=object)
    for mask, name in rules:
        reason[(reason == "") & np.asarray(mask, dtype=bool)] = name
    return reason
