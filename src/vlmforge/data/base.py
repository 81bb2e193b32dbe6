"""The interface every image-text source offers to training and evaluation."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vlmforge.data.accounting import Drop

DEFAULT_PROMPTS = ("a photo of a {}.",)


@dataclass
class ImageTextSet:
    """Images (loaded lazily by ``load_image``) with candidate captions and optional class labels.

    ``captions[i]`` lists the captions of sample i; training picks one per epoch, deterministically.
    ``labels``/``classnames`` are present when the source knows classes (zero-shot evaluation needs them).
    ``rejected`` lists the source's entries dropped when it was opened (unpaired, bad caption, cut off):
    they count toward ``data.max_bad_fraction`` with the images that fail to decode later.
    """

    name: str
    keys: list[str]
    captions: list[list[str]]
    load_image: object  # Callable[[int], torch.Tensor]: global index -> normalised [3, H, W] float tensor
    labels: np.ndarray | None = None
    classnames: list[str] | None = None
    prompts: Sequence[str] = DEFAULT_PROMPTS
    indices: np.ndarray = field(default=None)  # type: ignore[assignment]
    fingerprint: str = ""
    rejected: list[Drop] = field(default_factory=list)
    caption_keys: list[str] | None = None  # per key: samples sharing one share a caption (multi-positive)
    boxes: np.ndarray | None = None  # per key: [4] box of the caption's object, normalised x1, y1, x2, y2

    def __post_init__(self) -> None:
        if self.indices is None:
            self.indices = np.arange(len(self.keys))

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> torch.Tensor:
        return self.load_image(int(self.indices[i]))  # type: ignore[operator]

    def captions_of(self, i: int) -> list[str]:
        return self.captions[int(self.indices[i])]

    def label(self, i: int) -> int | None:
        return None if self.labels is None else int(self.labels[self.indices[i]])

    def box(self, i: int) -> tuple[float, float, float, float]:
        """The box of sample ``i``'s object (normalised x1, y1, x2, y2); only for sources with boxes."""
        assert self.boxes is not None
        x1, y1, x2, y2 = (float(v) for v in self.boxes[int(self.indices[i])])
        return (x1, y1, x2, y2)

    def key(self, i: int) -> str:
        return self.keys[int(self.indices[i])]

    def subset(self, indices: np.ndarray, suffix: str) -> ImageTextSet:
        return ImageTextSet(
            name=f"{self.name}:{suffix}",
            keys=self.keys,
            captions=self.captions,
            load_image=self.load_image,
            labels=self.labels,
            classnames=self.classnames,
            prompts=self.prompts,
            indices=self.indices[np.asarray(indices, dtype=np.int64)],
            fingerprint=self.fingerprint,
            rejected=self.rejected,
            caption_keys=self.caption_keys,
            boxes=self.boxes,
        )

    @property
    def source_size(self) -> int:
        """Entries of the whole source: usable samples (all splits) plus those rejected when opened."""
        return len(self.keys) + len(self.rejected)

    def all_captions(self) -> list[str]:
        return sorted({c for i in self.indices for c in self.captions[int(i)]})


def fingerprint_bytes(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def split_indices(n: int, labels: np.ndarray | None, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split (seeded by a constant, never by the run seed), stratified when labels exist."""
    if val_fraction <= 0:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    stratify = labels if labels is not None and np.unique(labels).size > 1 else None
    train, val = train_test_split(np.arange(n), test_size=val_fraction, random_state=0, stratify=stratify)
    return np.sort(train), np.sort(val)
