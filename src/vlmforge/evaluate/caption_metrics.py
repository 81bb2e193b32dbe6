"""Captioning metrics as pure functions on tokenised captions: corpus BLEU (Papineni et al. 2002) and CIDEr-D
(Vedantam et al. 2015), following the COCO caption evaluation code (coco-caption) in their choices.

No maintained package that works offline is installed here (pycocoevalcap, sacrebleu and nltk are absent),
so both are implemented; tests check them on hand-computed examples.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
Ngrams = Counter[tuple[str, ...]]


def caption_words(text: str) -> list[str]:
    """Lower-cased words with punctuation dropped, as coco-caption's tokenizer leaves them."""
    return _WORD.findall(text.lower())


def ngrams(words: Sequence[str], n: int) -> Ngrams:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
) -> dict[str, float]:
    """Corpus BLEU-1..4 (Papineni et al. 2002, eq. in §2.3): the geometric mean of the corpus-wide clipped
    n-gram precisions p_1..p_n times the brevity penalty min(1, exp(1 - r / c)), where c is the candidates'
    total length and r the sum of each candidate's closest reference length (the shorter one on a tie).
    A precision with no matching n-gram makes that BLEU-n 0 (no smoothing)."""
    matched, total = [0] * 4, [0] * 4
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            counts = ngrams(cand, n)
            most = Counter[tuple[str, ...]]()
            for ref in refs:
                most |= ngrams(ref, n)  # per n-gram, the largest count in any one reference
            matched[n - 1] += sum(min(count, most[gram]) for gram, count in counts.items())
            total[n - 1] += sum(counts.values())
    if cand_len == 0:
        return {f"bleu{n}": 0.0 for n in range(1, 5)}
    brevity = min(1.0, math.exp(1 - ref_len / cand_len))
    scores, log_sum = {}, 0.0
    for n in range(1, 5):
        if matched[n - 1] == 0:
            log_sum = -math.inf
        else:
            log_sum += math.log(matched[n - 1] / total[n - 1])
        scores[f"bleu{n}"] = brevity * math.exp(log_sum / n) if log_sum > -math.inf else 0.0
    return scores


def cider_d(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    sigma: float = 6.0,
) -> float:
    """CIDEr-D (Vedantam et al. 2015, §3 and §4.1): for n = 1..4, TF-IDF n-gram vectors (document frequency
    over the images' reference sets), the candidate's vector clipped by each reference's, cosine similarity
    damped by a Gaussian of the length difference, averaged over n and references, times 10; the mean over
    images. Like coco-caption, term frequencies are raw counts (the cosine normalises them)."""
    if not candidates:
        return 0.0
    ref_grams = [[[ngrams(ref, n) for n in range(1, 5)] for ref in refs] for refs in references]
    document_frequency = Counter[tuple[str, ...]]()
    for refs in ref_grams:
        document_frequency.update({gram for ref in refs for order in ref for gram in order})
    log_images = math.log(len(candidates))

    def vectors(grams: list[Ngrams]) -> list[dict[tuple[str, ...], float]]:
        return [
            {
                g: count * (log_images - math.log(max(1.0, document_frequency[g])))
                for g, count in order.items()
            }
            for order in grams
        ]

    total = 0.0
    for cand, refs, grams in zip(candidates, references, ref_grams, strict=True):
        cand_vectors = vectors([ngrams(cand, n) for n in range(1, 5)])
        per_n = [0.0] * 4
        for ref, ref_vectors in zip(refs, (vectors(g) for g in grams), strict=True):
            damping = math.exp(-((len(cand) - len(ref)) ** 2) / (2 * sigma**2))
            for n, (c, r) in enumerate(zip(cand_vectors, ref_vectors, strict=True)):
                dot = sum(min(value, r.get(g, 0.0)) * r.get(g, 0.0) for g, value in c.items())
                norms = _norm(c) * _norm(r)
                per_n[n] += damping * dot / norms if norms else 0.0
        total += 10.0 * sum(per_n) / 4 / len(refs)
    return total / len(candidates)


def _norm(vector: dict[tuple[str, ...], float]) -> float:
    return math.sqrt(sum(v * v for v in vector.values()))


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of generated captions against every reference caption of each image."""
    cand = [caption_words(c) for c in candidates]
    refs = [[caption_words(r) for r in rs] for rs in references]
    return {**bleu(cand, refs), "cider_d": cider_d(cand, refs)}
