"""Deterministic, resumable, rank-aware batching.

The order of an epoch is a pure function of (seed, epoch): a seeded permutation cut into global
batches. Global batch k holds the same samples whatever the device count; each rank takes its own
micro-batches of it. Every micro-batch carries its (epoch, position) so a checkpoint records exactly
where the data stream stands, and resuming skips what was consumed: no sample missed or repeated.

An image that cannot be used (``BadSample``) is replaced by the next usable sample of the source
(deterministic, so batch shapes stay fixed) and reported in the batch's ``dropped`` list; the sampled
``index`` stays the one the sampler chose, so the exact-once property holds over sampled indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vlmforge.data.accounting import BadSample
from vlmforge.data.base import ImageTextSet
from vlmforge.data.tokenizers import TextTokenizer
from vlmforge.errors import UserError

MAX_SUBSTITUTES = 64  # consecutive unusable samples tolerated before the data is declared broken


@dataclass(frozen=True)
class DataPosition:
    """Where the stream stands: the next micro-batch to read is ``micro_batch`` of ``epoch`` (per rank)."""

    epoch: int
    micro_batch: int


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class GlobalBatchSampler:
    """Yields, for this rank, lists of ``(epoch, micro_batch_index, sample_index)`` keys."""

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        resume: DataPosition | None = None,
    ) -> None:
        if global_batch % (micro_batch * world_size):
            raise ValueError("global batch must be a multiple of micro_batch * world_size")
        if num_samples < global_batch:
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {global_batch}")
        self.n, self.global_batch, self.micro_batch = num_samples, global_batch, micro_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.accumulate = global_batch // (micro_batch * world_size)
        self.steps_per_epoch = num_samples // global_batch  # the incomplete last global batch is dropped
        self.resume = resume
        self.epoch = resume.epoch if resume else 0
        # Lightning announces each epoch through ``dataloader.batch_sampler.sampler.set_epoch``.
        self.sampler = _EpochHandle(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulate

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in the order they are cut into global batches."""
        return epoch_permutation(self.n, self.seed, epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.epoch
        start = self.resume.micro_batch if self.resume and self.resume.epoch == epoch else 0
        order = self.epoch_order(epoch)
        for position in range(start, len(self)):
            step, accum = divmod(position, self.accumulate)
            chunk = accum * self.world_size + self.rank
            begin = step * self.global_batch + chunk * self.micro_batch
            yield [(epoch, position, int(i)) for i in order[begin : begin + self.micro_batch]]


class _EpochHandle:
    """Receives Lightning's per-epoch ``set_epoch`` call for the batch sampler that owns it."""

    def __init__(self, owner: GlobalBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class CaptionedImages(torch.utils.data.Dataset):
    """Training samples: image + one caption, chosen per (seed, epoch, sample) so runs are reproducible."""

    def __init__(
        self,
        data: ImageTextSet,
        tokenizer: TextTokenizer,
        context_length: int,
        seed: int,
        caption_ids: np.ndarray | None = None,
    ) -> None:
        self.data, self.tokenizer, self.context_length, self.seed = data, tokenizer, context_length, seed
        self.caption_ids = caption_ids  # set: every sample carries ``caption_id`` (multi-positive losses)
        self.with_images = True  # False when the loader decodes images itself (FFCV)
        self._token_cache: dict[str, torch.Tensor] = {}
        self._draws: tuple[int, np.ndarray] | None = None

    def _draw(self, epoch: int, index: int) -> int:
        """A per-epoch random draw for every sample, computed once per epoch (vectorised)."""
        if self._draws is None or self._draws[0] != epoch:
            self._draws = (
                epoch,
                np.random.default_rng([self.seed, epoch, 1]).integers(0, 2**31, len(self.data)),
            )
        return int(self._draws[1][index])

    def __len__(self) -> int:
        return len(self.data)

    def _tokens(self, caption: str) -> torch.Tensor:
        if caption not in self._token_cache:
            self._token_cache[caption] = self.tokenizer([caption], self.context_length)[0]
        return self._token_cache[caption]

    def caption(self, epoch: int, index: int) -> str:
        """The caption sample ``index`` is trained on in ``epoch``."""
        options = self.data.captions_of(index)
        return options[self._draw(epoch, index) % len(options)]

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, object]:
        epoch, position, index = key
        if not self.with_images:
            return self._item(epoch, position, index, index, [])
        dropped: list[dict[str, str]] = []
        for attempt in range(MAX_SUBSTITUTES + 1):
            used = (index + attempt) % len(self.data)
            try:
                image = self.data.image(used)
                break
            except BadSample as bad:
                # only the sampled sample is counted: a failed substitute is counted when it is sampled
                if attempt == 0:
                    dropped.append(bad.drop.to_json())
        else:
            raise UserError(
                f"data {self.data.name!r}: {MAX_SUBSTITUTES + 1} consecutive samples from "
                f"{self.data.key(index)} cannot be read",
                hint="run `vlmforge data check` on the source",
            )
        return {"image": image} | self._item(epoch, position, index, used, dropped)

    def _item(self, epoch: int, position: int, index: int, used: int, dropped: list) -> dict[str, object]:
        caption = self.caption(epoch, used)
        # a substitute brings its own caption, hence its own id: it is a positive only of what it shows
        grouped = {} if self.caption_ids is None else {"caption_id": torch.tensor(self.caption_ids[used])}
        if self.data.boxes is not None:  # the box of the object the caption names (model.box_head)
            grouped["box"] = torch.tensor(self.data.box(used))
        return grouped | {
            "caption": caption,
            "text": self._tokens(caption),
            "index": index,
            "epoch": epoch,
            "position": position,
            "dropped": dropped,
        }


def collate(items: list[dict[str, object]]) -> dict[str, object]:
    """Stacks the per-sample tensors (``image``, ``text``, and any a family adds, e.g. ``negative_text``)."""
    tensors = [k for k, v in items[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.stack([it[k] for it in items]) for k in tensors} | {  # type: ignore[misc]
        "index": torch.tensor([it["index"] for it in items]),
        "epoch": torch.tensor(items[0]["epoch"]),
        "position": torch.tensor(items[0]["position"]),
        "dropped": [drop for it in items for drop in it["dropped"]],  # type: ignore[attr-defined]
    }
