"""Captioning metrics as the COCO caption evaluation computes them (pycocoevalcap 1.2, the Python 3 port of
github.com/tylin/coco-caption): corpus BLEU-1..4, ROUGE-L and CIDEr-D as pure functions on tokenised captions,
METEOR 1.5 through the evaluation's own jar when Java is there (``vlmforge.evaluate.meteor``), and
``caption_scores`` tying them to the evaluation's tokenisation (``vlmforge.evaluate.ptb_tokenizer``).

SPICE, the remaining COCO metric, is not computed: its jar downloads Stanford CoreNLP models on first use,
which an offline evaluation cannot do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from vlmforge.evaluate.meteor import meteor, meteor_unavailable_reason
from vlmforge.evaluate.ptb_tokenizer import ptb_tokenize

Ngrams = Counter[tuple[str, ...]]
Tokens = Sequence[str]
BLEU_TINY, BLEU_SMALL = 1e-15, 1e-9  # BleuScorer's smoothing of the precisions and of the length ratio


def ngrams(words: Tokens, n: int) -> Ngrams:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _closest_length(references: Sequence[Tokens], length: int) -> int:
    """The reference length closest to ``length``, the shorter one on a tie (BleuScorer's 'closest')."""
    return min((abs(len(ref) - length), len(ref)) for ref in references)[1]


def bleu(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (Papineni et al. 2002) as pycocoevalcap/bleu/bleu_scorer.py computes it with
    option='closest': BLEU-n = (prod_{k<=n} (matched_k + 1e-15) / (total_k + 1e-9))^(1/n) over the corpus'
    clipped k-gram counts, times exp(1 - r/c) when c/r < 1 (c, r: candidate and closest-reference lengths,
    smoothed the same way), so a corpus without any matching 4-gram gets a tiny BLEU-4 rather than 0."""
    matched, total = [0] * 4, [0] * 4
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        cand_len += len(cand)
        ref_len += _closest_length(refs, len(cand))
        for n in range(1, 5):
            most = Counter[tuple[str, ...]]()
            for ref in refs:
                most |= ngrams(ref, n)  # per n-gram, the largest count in any one reference
            matched[n - 1] += sum(min(count, most[gram]) for gram, count in ngrams(cand, n).items())
            total[n - 1] += max(0, len(cand) - n + 1)
    ratio = (cand_len + BLEU_TINY) / (ref_len + BLEU_SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = {}, 1.0
    for n in range(1, 5):
        product *= (matched[n - 1] + BLEU_TINY) / (total[n - 1] + BLEU_SMALL)
        scores[f"Bleu_{n}"] = product ** (1 / n) * brevity
    return scores


def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token sequences (dynamic programming)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], beta: float = 1.2) -> float:
    """ROUGE-L (Lin 2004) as pycocoevalcap/rouge/rouge.py computes it: per image the LCS precision and recall
    against each reference, each maximised over the references separately, combined into the F-measure with
    beta = 1.2; the mean over images. Like the original, which splits the tokenised caption on " ", an empty
    caption counts as one empty token."""
    scores = []
    for cand, refs in zip(candidates, references, strict=True):
        cand = list(cand) or [""]
        lcs = [lcs_length(list(ref) or [""], cand) for ref in refs]
        precision = max(n / len(cand) for n in lcs)
        recall = max(n / max(1, len(ref)) for n, ref in zip(lcs, refs, strict=True))
        if precision and recall:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        else:
            scores.append(0.0)
    return math.fsum(scores) / len(scores) if scores else 0.0


def _tfidf(grams: Ngrams, document_frequency: Counter[tuple[str, ...]], log_images: float) -> list[dict]:
    """Per order n = 1..4, each n-gram's count times log(images / document frequency)."""
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(4)]
    for gram, count in grams.items():
        vectors[len(gram) - 1][gram] = count * (log_images - math.log(max(1.0, document_frequency[gram])))
    return vectors


def _norm(vector: dict[tuple[str, ...], float]) -> float:
    return math.sqrt(sum(v * v for v in vector.values()))


def cider_d(
    candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], sigma: float = 6.0
) -> float:
    """CIDEr-D (Vedantam et al. 2015) as pycocoevalcap/cider/cider_scorer.py computes it: n = 1..4 TF-IDF
    vectors with raw counts and document frequencies over the evaluated images' reference sets, the
    candidate's weights clipped by each reference's, cosine similarity times exp(-d^2 / (2 sigma^2)) where d
    is the difference of the two captions' bigram counts, averaged over n and references, times 10; the mean
    over images."""
    if not candidates:
        return 0.0
    ref_grams = [[_all_ngrams(ref) for ref in refs] for refs in references]
    document_frequency = Counter[tuple[str, ...]]()
    for refs in ref_grams:
        document_frequency.update({gram for grams in refs for gram in grams})
    log_images = math.log(len(candidates))
    scores = []
    for cand, refs in zip(candidates, ref_grams, strict=True):
        cand_grams = _all_ngrams(cand)
        cand_vectors = _tfidf(cand_grams, document_frequency, log_images)
        per_order = [0.0] * 4
        for grams in refs:
            ref_vectors = _tfidf(grams, document_frequency, log_images)
            delta = float(_bigram_count(cand_grams) - _bigram_count(grams))
            damping = math.e ** (-(delta**2) / (2 * sigma**2))
            for n, (c, r) in enumerate(zip(cand_vectors, ref_vectors, strict=True)):
                value = sum(min(weight, r.get(g, 0.0)) * r.get(g, 0.0) for g, weight in c.items())
                norms = (_norm(c), _norm(r))
                if norms[0] != 0 and norms[1] != 0:
                    value /= norms[0] * norms[1]
                per_order[n] += value * damping
        scores.append(sum(per_order) / 4 / len(refs) * 10.0)
    return math.fsum(scores) / len(scores)


def _all_ngrams(words: Tokens) -> Ngrams:
    grams = Ngrams()
    for n in range(1, 5):
        grams.update(ngrams(words, n))
    return grams


def _bigram_count(grams: Ngrams) -> int:
    """The caption 'length' CIDEr-D's length penalty uses (cider_scorer.py counts the bigrams)."""
    return sum(count for gram, count in grams.items() if len(gram) == 2)


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float | str]:
    """The COCO caption evaluation's scores (pycocoevalcap/eval.py's keys) of one generated caption per image
    against all of the image's reference captions: Bleu_1..Bleu_4, METEOR (or METEOR_unavailable saying why),
    ROUGE_L, CIDEr. All in [0, 1] except CIDEr (up to 10)."""
    cand_tokens = [ptb_tokenize(c) for c in candidates]
    ref_tokens = [[ptb_tokenize(r) for r in refs] for refs in references]
    # BLEU and CIDEr split the tokenised caption on any whitespace (a fraction such as "3 1/2" is one PTB
    # token with a no-break space, two words for them); ROUGE-L and METEOR see the PTB tokens.
    cand_words = [_words(t) for t in cand_tokens]
    ref_words = [[_words(t) for t in refs] for refs in ref_tokens]
    scores: dict[str, float | str] = dict(bleu(cand_words, ref_words))
    reason = meteor_unavailable_reason()
    if reason is None:
        scores["METEOR"] = meteor(cand_tokens, ref_tokens)
    else:
        scores["METEOR_unavailable"] = reason
    scores["ROUGE_L"] = rouge_l(cand_tokens, ref_tokens)
    scores["CIDEr"] = cider_d(cand_words, ref_words)
    return scores


def _words(tokens: Tokens) -> list[str]:
    return " ".join(tokens).split()
