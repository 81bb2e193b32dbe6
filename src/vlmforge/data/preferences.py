"""Preference pairs for `vlmforge align`: a prompt about an image with a chosen and a rejected answer.

Two sources: a JSON list of {"id", "image", "prompt", "chosen", "rejected", "facts"?} with an image folder,
and an offline digits set (the right digit word chosen, one or more seeded wrong ones rejected, one pair
each; the digit as its fact).
``facts`` (captions, ground-truth answers or options) are what a factually augmented reward model
reads. Every entry read is kept or dropped with a reason (missing_image, decode_error / truncated,
empty_answer) and counted in a ``Tally``; a malformed entry is an error naming the file and the entry's
index. Both answers are encoded like a chat conversation (loss labels on the answer only) and collated
into one batch: the chosen rows first, then the rejected rows in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.config.schema import DigitsData, DigitsPreferences, PreferenceJsonData, PreferenceSource
from vlmforge.data.accounting import EXAMPLES_KEPT, Drop, Tally, budget_error, over_budget
from vlmforge.data.base import ImageTextSet, fingerprint_bytes, split_indices
from vlmforge.data.conversations import (
    IMAGE,
    ConversationSamples,
    Turn,
    collate_conversations,
    listed_images,
    read_json_list,
)
from vlmforge.errors import UserError

SIDES = ("chosen", "rejected")
DIGITS_PROMPT = "What digit is this?"


@dataclass
class PreferenceSet:
    """Preference pairs, each about at most one image of ``images`` (same global indices)."""

    images: ImageTextSet  # keys, lazy image loading, labels, subsets
    prompts: list[str]  # with <image> once, first, when the pair has an image
    answers: dict[str, list[str]]  # "chosen" / "rejected" -> answer per global index
    has_image: np.ndarray  # bool per global index
    tally: Tally  # entries read, kept, dropped per reason (of the whole source)
    facts: list[list[str]] = field(default_factory=list)  # per global index; empty: the source has none
    pairs_per_image: int = 1  # global index j * images + i: the j-th pair about image i

    def image_group(self, i: int) -> int:
        """The image pair ``i`` is about (pairs sharing it share its chosen answer)."""
        return self.global_index(i) % (len(self.images.keys) // self.pairs_per_image)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def name(self) -> str:
        return self.images.name

    def global_index(self, i: int) -> int:
        return int(self.images.indices[i])

    def turns(self, i: int, side: str = "chosen") -> list[Turn]:
        """The pair as a one-turn conversation with the ``side`` answer (VQA reads the chosen one)."""
        g = self.global_index(i)
        return [("human", self.prompts[g]), ("gpt", self.answers[side][g])]

    def image(self, i: int) -> torch.Tensor | None:
        return self.images.image(i) if self.has_image[self.global_index(i)] else None

    def side(self, side: str) -> AnswerView:
        return AnswerView(self, side)

    def subset(self, indices: np.ndarray, suffix: str) -> PreferenceSet:
        return replace(self, images=self.images.subset(indices, suffix))

    def facts_of(self, i: int) -> list[str]:
        return self.facts[self.global_index(i)] if self.facts else []

    def with_facts(self) -> PreferenceSet:
        """The same pairs with each prompt carrying the pair's facts (``fact_prompt``): what a factually
        augmented reward model reads."""
        if not any(self.facts):
            raise UserError(
                f"reward.facts: the preference data {self.name!r} gives no facts about its images",
                hint='add "facts" (captions, ground-truth answers or options) to the pairs, or set '
                "reward.facts=false",
            )
        prompts = [fact_prompt(p, f) for p, f in zip(self.prompts, self.facts, strict=True)]
        return replace(self, prompts=prompts)

    def texts(self) -> list[str]:
        return [
            text.replace(IMAGE, " ") for i in range(len(self)) for s in SIDES for _, text in self.turns(i, s)
        ]


@dataclass
class AnswerView:
    """One side of the pairs as conversations: what ``ConversationSamples`` encodes."""

    pairs: PreferenceSet
    side: str

    def __len__(self) -> int:
        return len(self.pairs)

    def turns(self, i: int) -> list[Turn]:
        return self.pairs.turns(i, self.side)

    def image(self, i: int) -> torch.Tensor | None:
        return self.pairs.image(i)


def fact_prompt(prompt: str, facts: list[str]) -> str:
    """``prompt`` with ``facts`` stated after its image and before its question (LLaVA-RLHF's
    Fact-RLHF gives its reward model the image's captions or ground-truth answers this way)."""
    if not facts:
        return prompt
    stated = f"Facts about the image: {'; '.join(facts)}.\n"
    if prompt.startswith(IMAGE):
        return f"{IMAGE}\n{stated}{prompt.removeprefix(IMAGE).lstrip()}"
    return stated + prompt


# ---------------------------------------------------------------------------------------- sources
def digits_preferences(cfg: DigitsPreferences, image_size: int) -> PreferenceSet:
    """Every digit asked about ``cfg.rejected`` times: the right digit word chosen, a distinct wrong one
    (seeded) rejected in each; pair ``j * images + i`` is image i's j-th."""
    from vlmforge.data.digits import CLASSNAMES, digits_set

    images = digits_set(DigitsData(image_size=image_size, mean=cfg.mean, std=cfg.std, templates=["{}"]))
    assert images.labels is not None
    labels = images.labels
    offsets = wrong_offsets(len(labels), cfg.rejected, cfg.seed)  # [rejected, images], 1..9
    wrong = (labels[None] + offsets) % 10
    answers = {
        "chosen": [CLASSNAMES[int(y)] for y in labels] * cfg.rejected,
        "rejected": [CLASSNAMES[int(y)] for y in wrong.flatten()],
    }
    paired = repeated_images(images, cfg.rejected)
    paired.name = "digits-preferences"
    paired.captions = [[a] for a in answers["chosen"]]
    prompts = [f"{IMAGE}\n{DIGITS_PROMPT}"] * len(paired.keys)
    facts = [[word] for word in answers["chosen"]]  # the ground-truth answer, as VQA facts are
    has_image = np.ones(len(paired.keys), dtype=bool)
    tally = Tally(read=len(paired.keys))
    return PreferenceSet(paired, prompts, answers, has_image, tally, facts, cfg.rejected)


def wrong_offsets(images: int, per_image: int, seed: int) -> np.ndarray:
    """[per_image, images] distinct offsets in 1..9 from each image's digit to a wrong one: the first row
    is the single seeded draw of one wrong answer per image, the others a seeded order of the rest."""
    rng = np.random.default_rng(seed)
    first = rng.integers(1, 10, size=images)
    rest = np.stack([rng.permutation([o for o in range(1, 10) if o != f]) for f in first], 1)
    return np.concatenate([first[None], rest[: per_image - 1]])


@dataclass(frozen=True)
class _CycledLoader:
    """Image ``g % images`` for global index g: the pairs about one image share its pixels."""

    load: Any
    images: int

    def __call__(self, g: int) -> torch.Tensor:
        return self.load(g % self.images)


def repeated_images(images: ImageTextSet, times: int) -> ImageTextSet:
    """``images`` listed ``times`` times over (global index j * len + i is image i), for several pairs per
    image; once, it is ``images`` itself."""
    if times == 1:
        return images
    count = len(images.keys)
    assert images.labels is not None
    return replace(
        images,
        keys=[f"{k}#{j}" if j else k for j in range(times) for k in images.keys],
        captions=images.captions * times,
        load_image=_CycledLoader(images.load_image, count),
        labels=np.tile(images.labels, times),
        indices=np.arange(count * times),
        fingerprint=fingerprint_bytes(images.fingerprint.encode(), f"x{times}".encode()),
    )


def preference_json(cfg: PreferenceJsonData, image_size: int) -> PreferenceSet:
    """The preference JSON; a malformed entry is an error naming the file and the entry's index, a pair
    that cannot be used (missing or unreadable image, empty answer) is dropped and counted."""
    entries = read_json_list(cfg.path, "preference pair", hint="set data.path")
    folder = cfg.image_folder or cfg.path.parent
    tally = Tally(read=len(entries))
    keys: list[str] = []
    files: list[Path | None] = []
    prompts: list[str] = []
    answers: dict[str, list[str]] = {side: [] for side in SIDES}
    facts: list[list[str]] = []
    for n, entry in enumerate(entries):
        key, image, prompt, pair = _entry(entry, f"{cfg.path}: entry {n}")
        entry_facts = _facts(entry, f"{cfg.path}: entry {n}")
        file = folder / image if image else None
        reason = _unusable(file, pair)
        if reason is not None:
            tally.dropped[reason[0]] += 1
            if len(tally.examples) < EXAMPLES_KEPT:
                tally.examples.append(Drop(str(cfg.path), key, *reason))
            continue
        keys.append(key)
        files.append(file)
        prompts.append(prompt if file is None or IMAGE in prompt else f"{IMAGE}\n{prompt}")
        for side, answer in zip(SIDES, pair, strict=True):
            answers[side].append(answer)
        facts.append(entry_facts)
    if over_budget(tally.bad, tally.read, cfg.max_bad_fraction) or not keys:
        raise budget_error(str(cfg.path), tally.bad, tally.read, cfg.max_bad_fraction, tally.examples)
    captions = [[a] for a in answers["chosen"]]
    images = listed_images(cfg.path, keys, files, captions, image_size, cfg.mean, cfg.std)
    has_image = np.array([f is not None for f in files])
    return PreferenceSet(images, prompts, answers, has_image, tally, facts)


def _entry(entry: Any, where: str) -> tuple[str, str | None, str, tuple[str, str]]:
    """(key, image file name, prompt, (chosen, rejected)) of one entry, or an error naming it."""
    fields = ("prompt", *SIDES)
    if not isinstance(entry, dict) or any(not isinstance(entry.get(f), str) for f in fields):
        raise UserError(
            f"{where}: needs text fields 'prompt', 'chosen' and 'rejected'",
            hint='each entry is {"id", "image", "prompt", "chosen", "rejected"}',
        )
    image = entry.get("image")
    if image is not None and not isinstance(image, str):
        raise UserError(f"{where}: 'image' must be a file name, got {type(image).__name__}")
    prompt = entry["prompt"]
    if prompt.count(IMAGE) > (1 if image else 0):
        raise UserError(f"{where}: {IMAGE} may appear only once, and only in a pair with an 'image'")
    return str(entry.get("id", where.rsplit(" ", 1)[-1])), image, prompt, (entry["chosen"], entry["rejected"])


def _facts(entry: dict[str, Any], where: str) -> list[str]:
    """The entry's optional ``facts``: one text or a list of texts about its image."""
    facts = entry.get("facts", [])
    if isinstance(facts, str):
        facts = [facts]
    if not isinstance(facts, list) or any(not isinstance(f, str) for f in facts):
        raise UserError(
            f"{where}: 'facts' must be a text or a list of texts, got {type(entry['facts']).__name__}",
            hint='e.g. "facts": ["a black cat on a red sofa", "answer: two"]',
        )
    return [f.strip() for f in facts if f.strip()]


def _unusable(file: Path | None, pair: tuple[str, str]) -> tuple[str, str] | None:
    """(reason, detail) when the pair cannot be trained on; images are decoded once here to find out."""
    from vlmforge.data.images import ImageError, decode_rgb

    empty = [side for side, answer in zip(SIDES, pair, strict=True) if not answer.strip()]
    if empty:
        return "empty_answer", f"empty {' and '.join(empty)} answer"
    if file is None:
        return None
    if not file.is_file():
        return "missing_image", f"{file} not found"
    try:
        decode_rgb(file)
    except ImageError as exc:
        return exc.reason, f"{file.name}: {exc.detail}"
    return None


def open_preferences(cfg: PreferenceSource, image_size: int) -> PreferenceSet:
    if isinstance(cfg, DigitsPreferences):
        return digits_preferences(cfg, image_size)
    return preference_json(cfg, image_size)


def split_preferences(cfg: PreferenceSource, image_size: int) -> tuple[PreferenceSet, PreferenceSet]:
    """The fixed (seed-independent) training and held-out pairs, split by image (all the pairs about an
    image on one side) and stratified when labels exist."""
    full = open_preferences(cfg, image_size)
    times = full.pairs_per_image
    count = len(full.images.keys) // times
    labels = None if full.images.labels is None else full.images.labels[:count]
    train, val = split_indices(count, labels, cfg.val_fraction)  # by image: its pairs stay together
    pairs = [np.concatenate([part + j * count for j in range(times)]) for part in (train, val)]
    return full.subset(pairs[0], "train"), full.subset(pairs[1], "val")


# -------------------------------------------------------------------------------------- encoding
class PreferenceSamples(torch.utils.data.Dataset):
    """Training pairs keyed by ``GlobalBatchSampler``'s (epoch, position, index): both answers encoded
    as chat conversations (labels on the answer only), the image read once."""

    def __init__(self, data: PreferenceSet, tokenizer: Any, image_tokens: int, image_id: int, max_text: int):
        self.data = data
        self.sides = {
            side: ConversationSamples(data.side(side), tokenizer, "chat", image_tokens, image_id, max_text)  # type: ignore[arg-type]
            for side in SIDES
        }

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, position, index = key
        item: dict[str, Any] = {"image": self.data.image(index), "index": index, "epoch": epoch}
        item["position"] = position
        return item | {side: samples.encoded(index) for side, samples in self.sides.items()}


def collate_preferences(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """One padded batch of 2 x len(items) rows: the chosen answers, then the rejected ones."""
    rows = [{**it, "input_ids": it[side][0], "labels": it[side][1]} for side in SIDES for it in items]
    batch = collate_conversations(rows, pad_id)
    batch["index"] = batch["index"][: len(items)]
    return batch
