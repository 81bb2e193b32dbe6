"""Language ID on short captions: which model, rule and threshold keep English alt-text and drop the rest.

The set is tests/data/langid_captions.jsonl (hand-written alt-text captions, 3-20 words, English and 12
other languages). Each candidate is the curate `language` step's own scoring (vlmforge.curate.langid) or,
where installed, lingua-language-detector, under a grid of thresholds. Thresholds are picked on one half of
the set (alternate captions of each language) and checked on the other half, so the pick is not fitted to
the captions it is judged on.

    OMP_NUM_THREADS=1 python benchmarks/langid.py

Writes benchmarks/results/langid.json: per candidate and threshold the confusion table (English kept /
dropped, other languages kept / dropped, kept per language), samples/s of each model, and the pick.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_result
from vlmforge.curate.langid import fasttext_scores, langid_top, language_reasons

CAPTIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "langid_captions.jsonl"
KEEP = ["en"]
ENGLISH_KEPT, OTHERS_DROPPED = 0.99, 0.95  # the goal: a fifth of short English must no longer be lost
MIN_SCORE = 0.1  # the step's default floor on fastText's kept probability
TOP_SCORES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
RATIOS = [0.1, 0.25, 0.5, 1.0]


def load() -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], np.array([r["lang"] for r in rows])


def halves(langs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alternate captions of each language: (pick half, check half) as boolean masks."""
    pick = np.zeros(len(langs), dtype=bool)
    for lang in np.unique(langs):
        rows = np.flatnonzero(langs == lang)
        pick[rows[::2]] = True
    return pick, ~pick


def timed(fn: Callable[[str], Any], texts: list[str]) -> tuple[list[Any], float]:
    """Outputs and samples/s, the model loaded before the clock starts."""
    fn(texts[0])
    start = time.perf_counter()
    out = [fn(t) for t in texts]
    return out, len(texts) / (time.perf_counter() - start)


def lingua_scores(texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """lingua-language-detector (all languages, high accuracy): English and best other confidence."""
    from lingua import Language, LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def scores(text: str) -> tuple[float, float]:
        values = detector.compute_language_confidence_values(text)
        english = sum(v.value for v in values if v.language == Language.ENGLISH)
        return english, max((v.value for v in values if v.language != Language.ENGLISH), default=0.0)

    out, rate = timed(scores, texts)
    return np.array([o[0] for o in out]), np.array([o[1] for o in out]), rate


def confusion(keep: np.ndarray, langs: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    keep, langs = keep[rows], langs[rows]
    english = langs == "en"
    return {
        "english_kept": int((keep & english).sum()),
        "english_dropped": int((~keep & english).sum()),
        "others_kept": int((keep & ~english).sum()),
        "others_dropped": int((~keep & ~english).sum()),
        "english_kept_fraction": round(float(keep[english].mean()), 4),
        "others_dropped_fraction": round(float((~keep[~english]).mean()), 4),
        "kept_per_language": {
            str(lang): f"{int(keep[langs == lang].sum())}/{int((langs == lang).sum())}"
            for lang in np.unique(langs)
        },
    }


def candidates(texts: list[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """name -> per-caption keep mask, and model -> samples/s."""
    fast, fast_rate = timed(lambda t: fasttext_scores(t, KEEP), texts)
    lower, _ = timed(lambda t: fasttext_scores(t.lower(), KEEP), texts)
    langid, langid_rate = timed(langid_top, texts)
    _, both_rate = timed(lambda t: (fasttext_scores(t, KEEP), langid_top(t)), texts)
    top = np.array([f[0] for f in fast])
    kept, other = np.array([f[1] for f in fast]), np.array([f[2] for f in fast])
    kept_low, other_low = np.array([f[1] for f in lower]), np.array([f[2] for f in lower])
    none = np.full(len(texts), "")
    rules: dict[str, np.ndarray] = {}
    for t in TOP_SCORES:  # the rule before: fastText's top language must be kept and score >= t
        rules[f"fasttext top score >= {t}"] = np.isin(top, KEEP) & (kept >= t)
    for r in RATIOS:
        rules[f"fasttext ratio {r}"] = language_reasons(kept, other, none, KEEP, r, MIN_SCORE) == ""
        rules[f"fasttext lower-cased ratio {r}"] = (
            language_reasons(kept_low, other_low, none, KEEP, r, MIN_SCORE) == ""
        )
        langids = np.array(langid)
        rules[f"fasttext+langid ratio {r}"] = language_reasons(kept, other, langids, KEEP, r, MIN_SCORE) == ""
    rules["langid top"] = np.isin(np.array(langid), KEEP)
    rates = {"fasttext lite": fast_rate, "langid.py": langid_rate, "fasttext+langid": both_rate}
    if importlib.util.find_spec("lingua") is not None:
        english, best_other, rates["lingua"] = lingua_scores(texts)
        for r in RATIOS:
            rules[f"lingua ratio {r}"] = english >= r * best_other
    return rules, {k: round(v, 1) for k, v in rates.items()}


def pick(rules: dict[str, np.ndarray], langs: np.ndarray, rows: np.ndarray) -> str | None:
    """The candidate meeting both goals on `rows` that keeps the most English (the goal: stop losing it),
    then drops the most other-language captions."""
    scored = {name: confusion(keep, langs, rows) for name, keep in rules.items()}
    passing = [
        name
        for name, c in scored.items()
        if c["english_kept_fraction"] >= ENGLISH_KEPT and c["others_dropped_fraction"] >= OTHERS_DROPPED
    ]
    return max(
        passing,
        key=lambda n: (scored[n]["english_kept_fraction"], scored[n]["others_dropped_fraction"]),
        default=None,
    )


def main() -> None:
    texts, langs = load()
    pick_rows, check_rows = halves(langs)
    rules, rates = candidates(texts)
    everything = np.ones(len(texts), dtype=bool)
    chosen = pick(rules, langs, pick_rows)
    payload: dict[str, Any] = {
        "set": {"captions": len(texts), "english": int((langs == "en").sum()), "languages": len(set(langs))},
        "goal": {"english_kept": ENGLISH_KEPT, "others_dropped": OTHERS_DROPPED},
        "samples_per_s": rates,
        "picked_on_first_half": chosen,
        "candidates": {
            name: {
                "all": confusion(keep, langs, everything),
                "pick_half": confusion(keep, langs, pick_rows),
                "check_half": confusion(keep, langs, check_rows),
            }
            for name, keep in rules.items()
        },
    }
    path = write_result("langid", payload)
    for name, result in payload["candidates"].items():
        a, c = result["all"], result["check_half"]
        print(
            f"{name:34s} all: en kept {a['english_kept_fraction']:.3f} others dropped "
            f"{a['others_dropped_fraction']:.3f} | check half: {c['english_kept_fraction']:.3f} "
            f"{c['others_dropped_fraction']:.3f}"
        )
    print(f"samples/s {rates}; picked on the first half: {chosen}; wrote {path}")


if __name__ == "__main__":
    main()
