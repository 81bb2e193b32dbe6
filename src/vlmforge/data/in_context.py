"""Multimodal in-context samples for LLaVA (Otter / MIMIC-IT, Li et al. 2023): instruction-image-answer
examples as context, then a query instruction and image, as one multi-image chat conversation. Each
example's ``<image>`` becomes that image's placeholder tokens, so transformers' LLaVA scatters the
stacked ``pixel_values`` (every image of the batch, sample by sample, example by example) into them in
order. The loss is on the query's answer, or on every answer (``answer_loss``).

Sources: a JSON list (layout in ``config.data.InContextJsonData``) and offline digits ("<image> What is
this? seven <image> What is this? two <image> What is this?")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmforge.config.data import ConversationSource, DigitsInContext, InContextJsonData, InContextSource
from vlmforge.data.base import ImageTextSet, fingerprint_bytes, split_indices
from vlmforge.data.conversation_set import IMAGE, ConversationSet, Turn, read_json_list
from vlmforge.data.conversations import (
    IGNORE_INDEX,
    ConversationSamples,
    collate_conversations,
    encode,
    prompt_ids,
    split_conversations,
)
from vlmforge.errors import UserError

IN_CONTEXT_KINDS = ("in-context-json", "digits-in-context")
QUESTION = "What is this?"
NONCE_NAMES = ("dax", "blicket", "wug", "zorb", "fep", "toma", "kiki", "bouba", "glorp", "snib")
WAYS = 2  # classes one nonce sample binds names to


@dataclass
class InContextSet(ConversationSet):
    """Conversations of alternating (instruction with ``<image>``, answer) pairs, the last pair the query;
    ``image(i)`` is the sample's [images, 3, H, W] stack, one image per pair."""

    answer_loss: str = "query"

    def subset(self, indices: np.ndarray, suffix: str) -> InContextSet:
        return InContextSet(
            self.images.subset(indices, suffix), self.conversations, self.has_image, self.answer_loss
        )

    def context_size(self, i: int) -> int:
        """Context examples of sample ``i`` (its pairs but the query)."""
        return len(self.turns(i)) // 2 - 1


def is_in_context(source: Any) -> bool:
    return getattr(source, "kind", None) in IN_CONTEXT_KINDS


def split_stage_data(cfg: ConversationSource, image_size: int) -> tuple[ConversationSet, ConversationSet]:
    """A finetune stage's training and held-out parts: in-context samples or single-image conversations."""
    if isinstance(cfg, InContextJsonData | DigitsInContext):
        return split_in_context(cfg, image_size)
    return split_conversations(cfg, image_size)


def split_in_context(cfg: InContextSource, image_size: int) -> tuple[InContextSet, InContextSet]:
    """Training and held-out samples: digits split their images first, a JSON file its samples."""
    if isinstance(cfg, DigitsInContext):
        return digits_in_context(cfg, image_size)
    full = in_context_json(cfg, image_size)
    train, val = split_indices(len(full), None, cfg.val_fraction)
    return full.subset(train, "train"), full.subset(val, "val")


# ------------------------------------------------------------------------------------------ digits
def digits_in_context(cfg: DigitsInContext, image_size: int) -> tuple[InContextSet, InContextSet]:
    """Samples drawn from the fixed train / held-out split of the digits, so that no held-out image is
    ever seen in training; training samples have 0 to ``shots`` context examples, held-out ones ``shots``."""
    from vlmforge.config.data import DigitsData
    from vlmforge.data.digits import CLASSNAMES, digits_set

    digits = digits_set(DigitsData(image_size=image_size, mean=cfg.mean, std=cfg.std, templates=["{}"]))
    assert digits.labels is not None
    labels = digits.labels
    pools = split_indices(len(labels), labels, cfg.val_fraction)
    held_out = max(1, round(cfg.count * cfg.val_fraction))
    episodes: list[np.ndarray] = []
    conversations: list[list[Turn]] = []
    for part, (pool, samples) in enumerate(zip(pools, (cfg.count - held_out, held_out), strict=True)):
        rng = np.random.default_rng([cfg.seed, part])
        for _ in range(samples):
            shots = int(rng.integers(0, cfg.shots + 1)) if part == 0 else cfg.shots
            picked, names = _draw_episode(rng, pool, labels, shots, cfg.names)
            episodes.append(picked)
            conversations.append(
                [turn for name in names for turn in (("human", f"{IMAGE}\n{QUESTION}"), ("gpt", name))]
            )
    answers = [[turns[-1][1]] for turns in conversations]
    pixels = torch.stack([digits.load_image(i) for i in range(len(labels))])  # type: ignore[operator]
    images = ImageTextSet(
        name=f"digits-in-context-{cfg.names}",
        keys=[f"digits-icl-{i:05d}" for i in range(len(episodes))],
        captions=answers,
        load_image=lambda i: pixels[torch.as_tensor(episodes[i])],
        labels=np.array([labels[e[-1]] for e in episodes]),
        classnames=list(CLASSNAMES),
        fingerprint=fingerprint_bytes(
            digits.fingerprint.encode(), cfg.model_dump_json(exclude={"num_workers"}).encode()
        ),
    )
    full = InContextSet(images, conversations, np.ones(len(episodes), dtype=bool), cfg.answer_loss)
    train = cfg.count - held_out
    return full.subset(np.arange(train), "train"), full.subset(np.arange(train, cfg.count), "val")


def _draw_episode(
    rng: np.random.Generator, pool: np.ndarray, labels: np.ndarray, shots: int, names: str
) -> tuple[np.ndarray, list[str]]:
    """Digit indices (context then query) and their answers. 'nonce': ``WAYS`` classes get made-up names
    for this sample only, the context cycles through them, the query is one of them."""
    from vlmforge.data.digits import CLASSNAMES

    if names == "digit":
        picked = rng.choice(pool, size=shots + 1, replace=False)
        return picked, [CLASSNAMES[int(labels[i])] for i in picked]
    classes = rng.choice(np.unique(labels[pool]), size=WAYS, replace=False)
    words = rng.choice(len(NONCE_NAMES), size=WAYS, replace=False)
    order = [*np.resize(rng.permutation(WAYS), shots), int(rng.integers(WAYS))]
    picked = np.array([rng.choice(pool[labels[pool] == classes[w]]) for w in order])
    return picked, [NONCE_NAMES[words[w]] for w in order]


# -------------------------------------------------------------------------------------------- JSON
def in_context_json(cfg: InContextJsonData, image_size: int) -> InContextSet:
    """The JSON file's samples; every problem is reported with the file, the entry and the field."""
    from vlmforge.data.conversations import listed_images

    entries = read_json_list(cfg.path, "in-context sample", hint="set the stage's data.path")
    folder = cfg.image_folder or cfg.path.parent
    keys, files, conversations = [], [], []
    for n, entry in enumerate(entries):
        where = f"{cfg.path}: entry {n}"
        names, turns = _entry(entry, where)
        keys.append(str(entry.get("id", n)))
        files.append([folder / name for name in names])
        conversations.append(turns)
    absent = sorted({str(f) for sample in files for f in sample if not f.is_file()})
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise UserError(f"{cfg.path}: {len(absent)} image file(s) listed but missing: {shown}")
    flat = [f for sample in files for f in sample]
    starts = np.cumsum([0, *(len(sample) for sample in files)])
    one = listed_images(
        cfg.path, [str(f) for f in flat], list(flat), [[""]] * len(flat), image_size, cfg.mean, cfg.std
    )
    images = ImageTextSet(
        name=cfg.path.stem,
        keys=keys,
        captions=[[turns[-1][1]] for turns in conversations],
        load_image=lambda i: torch.stack([one.image(j) for j in range(starts[i], starts[i + 1])]),
        fingerprint=one.fingerprint,
    )
    return InContextSet(images, conversations, np.ones(len(keys), dtype=bool), cfg.answer_loss)


def _entry(entry: Any, where: str) -> tuple[list[str], list[Turn]]:
    """The image file names and the (instruction, answer) turns of one JSON entry."""
    hint = 'entries are {"id", "images": [...], "context": [{"instruction", "answer"}], "query": {...}}'
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object", hint=hint)
    context, query, images = entry.get("context", []), entry.get("query"), entry.get("images")
    if not isinstance(context, list):
        raise UserError(f"{where}: 'context' must be a list of {{'instruction', 'answer'}}", hint=hint)
    pairs = [*context, query]
    if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
        raise UserError(f"{where}: 'images' must be a list of image file names", hint=hint)
    if len(images) != len(pairs):
        raise UserError(
            f"{where}: {len(images)} images for {len(context)} context examples and the query",
            hint="give one image per context example, then the query's",
        )
    turns: list[Turn] = []
    for k, pair in enumerate(pairs):
        field = "query" if k == len(context) else f"context[{k}]"
        texts = [pair.get(key) for key in ("instruction", "answer")] if isinstance(pair, dict) else []
        if len(texts) != 2 or not all(isinstance(t, str) and t.strip() for t in texts):
            raise UserError(f"{where}: '{field}' needs an 'instruction' and an 'answer' text", hint=hint)
        instruction, answer = texts
        if instruction.count(IMAGE) > 1 or IMAGE in answer:
            raise UserError(f"{where}: '{field}': {IMAGE} at most once, in the instruction")
        if IMAGE not in instruction:
            instruction = f"{IMAGE}\n{instruction}"
        turns += [("human", instruction), ("gpt", answer)]
    return images, turns


# ---------------------------------------------------------------------------------------- encoding
def query_only(labels: list[int]) -> list[int]:
    """``labels`` with only the last answer (its last run of supervised tokens) kept."""
    kept = list(labels)
    end = max((i for i, y in enumerate(kept) if y != IGNORE_INDEX), default=-1)
    start = end
    while start > 0 and kept[start - 1] != IGNORE_INDEX:
        start -= 1
    return [IGNORE_INDEX if not start <= i <= end else y for i, y in enumerate(kept)]


def few_shot_prompt(
    tokenizer: Any, turns: list[Turn], shots: int, image_tokens: int, image_id: int
) -> list[int]:
    """The ids a model continues to answer the query after the last ``shots`` context examples: the
    training layout (``encode``, chat template) cut before the query's answer."""
    context = turns[:-2][-2 * shots :] if shots else []
    ids, _ = encode(tokenizer, context, "chat", image_tokens, image_id, max_text_tokens=1 << 30)
    return ids + prompt_ids(tokenizer, turns[-2][1], "chat", image_tokens, image_id)[1:]


class InContextSamples(ConversationSamples):
    """Training samples of an ``InContextSet``: the chat encoding, the context answers' labels ignored
    when the loss is on the query only; the item's image is the sample's stack."""

    data: InContextSet

    def encoded(self, index: int) -> tuple[list[int], list[int]]:
        if index not in self._cache:
            ids, labels = super().encoded(index)
            if self.data.answer_loss == "query":
                labels = query_only(labels)
            self._cache[index] = (ids, labels)
        return self._cache[index]


def stage_samples(
    data: ConversationSet, tokenizer: Any, template: str, image_tokens: int, image_id: int, max_text: int
) -> ConversationSamples:
    """The training samples of a finetune stage's data: in-context sets get their own labels."""
    kind = InContextSamples if isinstance(data, InContextSet) else ConversationSamples
    return kind(data, tokenizer, template, image_tokens, image_id, max_text)


def collate_in_context(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """``collate_conversations`` with every sample's image stack concatenated in order: [images of the
    batch, 3, H, W], the order LLaVA fills the ``<image>`` placeholders, row by row."""
    stacks = [it["image"] for it in items]
    batch = collate_conversations([{**it, "image": None} for it in items], pad_id)
    batch["pixel_values"] = torch.cat(stacks)
    batch["images_per_sample"] = torch.tensor([len(s) for s in stacks])
    return batch
