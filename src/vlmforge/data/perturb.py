"""Caption perturbations that keep a caption's words and change their order: the hard negatives of NegCLIP
and the probes of ARO / SugarCrepe-style compositionality evaluation (Yuksekgonul et al. 2023, §4 and §3).

A perturbation is a permutation of the caption's words (punctuation and spacing stay where they were), so a
"bag of words" model cannot tell the negative from the caption. Each one returns ``None`` when it does not
apply (e.g. fewer than two distinct content words), never the caption itself.

Training negatives are made here, at the text level in the dataset, rather than on token ids in the module:
word boundaries, function words and attribute words are known only in the text (a BPE token may be a
fragment of a word), the same functions then serve the ``compositional`` evaluation, and the caption is
re-tokenised with the run's own tokenizer, so any tokenizer works. Each negative is drawn from
``(seed, epoch, sample)``: the same whatever the device count, reproducible, and new each epoch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from vlmforge.data.loader import CaptionedImages

_WORD = re.compile(r"[^\W_]+")

# English function words: what is left is a content word (nouns, adjectives, verbs, numbers, ...).
FUNCTION_WORDS = frozenset(
    _WORD.findall(
        "a an the this that these those some any each every no all both of in on at to from by with "
        "without into onto over under above below behind beside between near next through across "
        "along around about for against among up down out off and or but nor so yet if than then as "
        "is are was were be been being am has have had do does did can could will would shall should "
        "may might must it its he she they them his her their we us our you your i me my mine there "
        "here what which who whom whose while s"
    )
)

# Default attribute words for ``swap_attributes``: colours, sizes, shapes, materials, states.
ATTRIBUTES = frozenset(
    _WORD.findall(
        "red orange yellow green blue purple pink brown black white gray grey silver golden dark "
        "light bright big small large little tiny huge tall short long wide narrow thick thin round "
        "square flat wooden metal plastic glass stone leather paper old new young empty full open "
        "closed wet dry hot cold clean dirty striped spotted"
    )
)


def attribute_words(words: Sequence[str] | None) -> frozenset[str]:
    """A recipe's ``attributes`` list, lower-cased; the built-in ``ATTRIBUTES`` when it has none."""
    return frozenset(w.lower() for w in words) if words else ATTRIBUTES


Reorder = Callable[[list[str], np.random.Generator, frozenset[str]], list[str] | None]


def _swap(words: list[str], candidates: Sequence[int], rng: np.random.Generator) -> list[str] | None:
    """Swap two of ``candidates`` (positions) that hold different words; ``None`` if all are the same."""
    lowered = [words[i].lower() for i in candidates]
    if len(set(lowered)) < 2:
        return None
    first = int(rng.integers(len(candidates)))
    others = [c for c, w in zip(candidates, lowered, strict=True) if w != lowered[first]]
    i, j = candidates[first], others[int(rng.integers(len(others)))]
    out = list(words)
    out[i], out[j] = out[j], out[i]
    return out


def swap_words(words: list[str], rng: np.random.Generator, attributes: frozenset[str]) -> list[str] | None:
    """Swap two content words ("a dog chasing a cat" -> "a cat chasing a dog"); any two words when the
    caption has fewer than two distinct content words."""
    content = [i for i, w in enumerate(words) if w.lower() not in FUNCTION_WORDS]
    return _swap(words, content, rng) or _swap(words, range(len(words)), rng)


def swap_attributes(
    words: list[str], rng: np.random.Generator, attributes: frozenset[str]
) -> list[str] | None:
    """Swap two attribute words, which swaps their bindings ("a red cube and a blue ball" -> "a blue cube
    and a red ball"; ARO's VG-Attribution)."""
    return _swap(words, [i for i, w in enumerate(words) if w.lower() in attributes], rng)


def _shuffled(chunks: list[list[str]], rng: np.random.Generator) -> list[str] | None:
    """The chunks in a random order that changes the word sequence (``None`` if no order does)."""
    flat = [w.lower() for chunk in chunks for w in chunk]
    if len(set(flat)) < 2 or len({tuple(w.lower() for w in chunk) for chunk in chunks}) < 2:
        return None
    while True:  # then some order differs, and a random order keeps the sequence with probability <= 1/2
        order = rng.permutation(len(chunks))
        out = [w for k in order for w in chunks[k]]
        if [w.lower() for w in out] != flat:
            return out


def shuffle_words(words: list[str], rng: np.random.Generator, attributes: frozenset[str]) -> list[str] | None:
    """All words in a random order (ARO's COCO/Flickr-Order "shuffle all words")."""
    return _shuffled([[w] for w in words], rng)


def shuffle_trigrams(
    words: list[str], rng: np.random.Generator, attributes: frozenset[str]
) -> list[str] | None:
    """The caption's word trigrams in a random order, each trigram intact (ARO's "shuffle trigrams")."""
    return _shuffled([words[i : i + 3] for i in range(0, len(words), 3)], rng)


PERTURBATIONS: dict[str, Reorder] = {
    "swap_words": swap_words,
    "swap_attributes": swap_attributes,
    "shuffle_words": shuffle_words,
    "shuffle_trigrams": shuffle_trigrams,
}


def perturb(
    caption: str, kind: str, rng: np.random.Generator, attributes: frozenset[str] = ATTRIBUTES
) -> str | None:
    """``caption`` with its words reordered by perturbation ``kind``; ``None`` if it does not apply."""
    spans = [m.span() for m in _WORD.finditer(caption)]
    words = [caption[a:b] for a, b in spans]
    reordered = PERTURBATIONS[kind](words, rng, attributes)
    if reordered is None:
        return None
    pieces, last = [], 0
    for (a, b), word in zip(spans, reordered, strict=True):
        pieces += [caption[last:a], word]
        last = b
    return "".join(pieces) + caption[last:]


def hard_negative(
    caption: str, kinds: Sequence[str], rng: np.random.Generator, attributes: frozenset[str] = ATTRIBUTES
) -> str:
    """One hard negative: a perturbation drawn uniformly among the ``kinds`` that apply to ``caption``. A
    caption no perturbation applies to (one distinct word) gets the empty caption, a plain negative."""
    for k in rng.permutation(len(kinds)):
        negative = perturb(caption, kinds[int(k)], rng, attributes)
        if negative is not None:
            return negative
    return ""


class HardNegativeCaptions(torch.utils.data.Dataset):
    """A ``CaptionedImages`` whose samples also carry ``negative_text``: the token ids of a hard negative of
    the sample's caption for that epoch, drawn from ``(seed, epoch, sample index)``."""

    def __init__(self, base: CaptionedImages, kinds: Sequence[str], attributes: frozenset[str]) -> None:
        self.base, self.kinds, self.attributes = base, list(kinds), attributes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, object]:
        epoch, _, index = key
        base, item = self.base, self.base[key]
        rng = np.random.default_rng([base.seed, epoch, index, 2])  # stream 1 draws the caption
        negative = hard_negative(str(item["caption"]), self.kinds, rng, self.attributes)
        item["negative_text"] = base.tokenizer([negative], base.context_length)[0]
        return item
