"""Text quality measures of web documents, as the ROOTS / OBELICS filters define them (huggingface/OBELICS,
obelics/processors/web_document_filtering.py, ``FilteringFunctions``): words, character and word n-gram
repetition, special characters and stop words; and the reasons a paragraph or document fails them."""

from __future__ import annotations

import re
import string
from collections import Counter

from vlmforge.config.interleaved import TextFilters
from vlmforge.curate.heuristics import STOP_WORDS

SPECIAL_CHARACTERS = frozenset(string.punctuation + string.digits + string.whitespace)
_STRIP = "".join(sorted(SPECIAL_CHARACTERS))
_SPLIT = re.compile(r"[ \n\t]+")


def text_words(text: str) -> list[str]:
    """Lower-cased words split on spaces, newlines and tabs, special characters stripped from both ends
    (OBELICS ``get_words_from_text``); words left empty are dropped."""
    stripped = (w.lower().strip(_STRIP) for w in _SPLIT.split(text))
    return [w for w in stripped if w]


def character_repetition_ratio(text: str, n: int) -> float:
    """Share of character n-gram occurrences taken by the most frequent ones: the top sqrt(#distinct)
    n-grams, counting only n-grams that repeat (OBELICS ``compute_character_repetition_ratio``)."""
    counts = sorted(Counter(text[i : i + n] for i in range(len(text) - n + 1)).values(), reverse=True)
    if not counts:
        return 0.0
    repeated = len(counts) - sum(1 for c in counts if c == 1)
    top = min(int(len(counts) ** 0.5), repeated)
    return sum(counts[:top]) / sum(counts)


def word_repetition_ratio(text: str, n: int) -> float:
    """Share of word n-gram occurrences whose n-gram occurs more than once (OBELICS
    ``compute_word_repetition_ratio``)."""
    words = text_words(text)
    counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)).values()
    total = sum(counts)
    return sum(c for c in counts if c > 1) / total if total else 0.0


def special_character_ratio(text: str) -> float:
    """Share of characters that are punctuation, digits or whitespace (OBELICS, ASCII set)."""
    return sum(1 for ch in text if ch in SPECIAL_CHARACTERS) / len(text) if text else 0.0


def stop_word_ratio(text: str) -> float:
    words = text_words(text)
    return sum(1 for w in words if w in STOP_WORDS) / len(words) if words else 0.0


def text_reason(text: str, cfg: TextFilters) -> str:
    """The first filter ``text`` fails ("" if none), in OBELICS' order."""
    n = len(text_words(text))
    if n < cfg.min_words:
        return "too_few_words"
    if n > cfg.max_words:
        return "too_many_words"
    if character_repetition_ratio(text, cfg.character_repetition_length) > cfg.max_character_repetition:
        return "character_repetition"
    if word_repetition_ratio(text, cfg.word_repetition_length) > cfg.max_word_repetition:
        return "word_repetition"
    if special_character_ratio(text) > cfg.max_special_characters:
        return "special_characters"
    if stop_word_ratio(text) < cfg.min_stop_words:
        return "few_stop_words"
    return ""
