"""Caption ids and batches of several images per caption, for multi-positive contrastive training
(StableRep, Tian et al. 2023: the images generated from one caption are positives of each other).

Samples share a caption id when the source says so (a folder's ``caption_id`` column) or, otherwise, when
their candidate captions are the same (digits: every image of a class). ``GroupedBatchSampler`` orders an
epoch as runs of ``k`` samples of one id, so every micro-batch holds whole runs; the order is a pure function
of (seed, epoch) like ``GlobalBatchSampler``'s, and resumes and splits across ranks the same way.
"""

from __future__ import annotations

import numpy as np

from vlmforge.data.base import ImageTextSet
from vlmforge.data.loader import GlobalBatchSampler
from vlmforge.errors import UserError


def caption_ids(data: ImageTextSet) -> np.ndarray:
    """A dense integer id per sample of ``data`` (in its index order): equal ids, shared caption."""
    keys = (
        [data.caption_keys[int(i)] for i in data.indices]
        if data.caption_keys is not None
        else [tuple(data.captions_of(i)) for i in range(len(data))]
    )
    numbering: dict[object, int] = {}
    return np.asarray([numbering.setdefault(key, len(numbering)) for key in keys], dtype=np.int64)


def caption_runs(ids: np.ndarray, per_caption: int, seed: int, epoch: int) -> np.ndarray:
    """[runs, per_caption] sample indices: each id's samples shuffled and cut into runs of ``per_caption``
    (an id's remainder sits out this epoch), the runs shuffled. The run count is the same every epoch."""
    rng = np.random.default_rng([seed, epoch, 2])
    shuffled = rng.permutation(len(ids))
    by_id = shuffled[np.argsort(ids[shuffled], kind="stable")]  # ids contiguous, members shuffled
    starts = np.flatnonzero(np.r_[True, np.diff(ids[by_id]) != 0])
    sizes = np.diff(np.r_[starts, len(ids)])
    rank_in_id = np.arange(len(ids)) - np.repeat(starts, sizes)
    kept = rank_in_id < np.repeat(sizes - sizes % per_caption, sizes)
    runs = by_id[kept].reshape(-1, per_caption)
    return runs[rng.permutation(len(runs))]


class GroupedBatchSampler(GlobalBatchSampler):
    """``GlobalBatchSampler`` over runs of ``per_caption`` samples sharing a caption id."""

    def __init__(
        self,
        ids: np.ndarray,
        per_caption: int,
        global_batch: int,
        micro_batch: int,
        **placement: object,
    ) -> None:
        if micro_batch % per_caption:
            raise UserError(
                f"data.images_per_caption {per_caption} does not divide the micro-batch of {micro_batch}",
                hint="choose train.micro_batch_size (and data.batch_size) as multiples of images_per_caption",
            )
        self.ids, self.per_caption = ids, per_caption
        grouped = len(caption_runs(ids, per_caption, 0, 0)) * per_caption
        if grouped < global_batch:
            raise UserError(
                f"data.images_per_caption {per_caption}: only {grouped} samples sit in caption ids with at "
                f"least {per_caption} images, too few for one global batch of {global_batch}",
                hint="give images that share a caption the same caption_id, or lower data.images_per_caption",
            )
        super().__init__(grouped, global_batch, micro_batch, **placement)  # type: ignore[arg-type]

    def epoch_order(self, epoch: int) -> np.ndarray:
        return caption_runs(self.ids, self.per_caption, self.seed, epoch).reshape(-1)
