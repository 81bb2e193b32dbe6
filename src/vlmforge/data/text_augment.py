"""EDA-style caption views for CLIP-rocket's strong text branch (Wei and Zou 2019, "EDA: Easy Data
Augmentation Techniques", §2.1: random swap and random deletion; Fini et al. 2023 draw one such operation per
caption view).

Made at the text level in the dataset, like the NegCLIP negatives (``vlmforge.data.perturb``), so words are
words whatever the tokenizer, and drawn from ``(seed, epoch, sample)``: the same whatever the device count.
"""

from __future__ import annotations

import numpy as np
import torch

from vlmforge.config.augment import TextAugment
from vlmforge.data.loader import CaptionedImages


def random_swap(words: list[str], swaps: int, rng: np.random.Generator) -> list[str]:
    """``words`` with two random positions exchanged, ``swaps`` times (EDA's RS)."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(swaps):
        i, j = rng.choice(len(out), 2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """``words`` with each removed with probability ``p``; one random word if none is left (EDA's RD)."""
    if len(words) < 2:
        return list(words)
    kept = [w for w, drop in zip(words, rng.random(len(words)) < p, strict=True) if not drop]
    return kept or [words[int(rng.integers(len(words)))]]


def augment_caption(caption: str, cfg: TextAugment, rng: np.random.Generator) -> str:
    """One strong view of ``caption``: kept, or one random swap or random deletion, drawn by weight."""
    weights = np.array([cfg.keep_weight, cfg.swap_weight, cfg.deletion_weight])
    choice = int(rng.choice(3, p=weights / weights.sum()))
    words = caption.split()
    if choice == 1:
        words = random_swap(words, cfg.swaps, rng)
    elif choice == 2:
        words = random_deletion(words, cfg.deletion_p, rng)
    return " ".join(words)


class AugmentedCaptions(torch.utils.data.Dataset):
    """A ``CaptionedImages`` whose samples also carry ``augmented_text`` [views, context]: the token ids of
    ``views`` strong views of the sample's caption for that epoch."""

    def __init__(self, base: CaptionedImages, cfg: TextAugment, views: int) -> None:
        self.base, self.cfg, self.views = base, cfg, views

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, object]:
        epoch, _, index = key
        base, item = self.base, self.base[key]
        rng = np.random.default_rng([base.seed, epoch, index, 5])  # 1: caption, 2: negatives, 3-4: views
        captions = [augment_caption(str(item["caption"]), self.cfg, rng) for _ in range(self.views)]
        item["augmented_text"] = base.tokenizer(captions, base.context_length)
        return item
