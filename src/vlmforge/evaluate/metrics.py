"""Evaluation metrics as pure functions on L2-normalised embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def zero_shot_classifier(class_prompt_features: torch.Tensor) -> torch.Tensor:
    """[classes, templates, dim] prompt embeddings -> [dim, classes] classifier: per-class mean of the
    normalised prompt embeddings, renormalised (prompt ensembling, Radford et al. 2021 §3.1.4)."""
    feats = torch.nn.functional.normalize(class_prompt_features, dim=-1).mean(dim=1)
    return torch.nn.functional.normalize(feats, dim=-1).T


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k highest logits."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_groups: torch.Tensor,
    text_groups: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k both ways. A retrieved item is a hit when its group equals the query's group: the
    sample index for exact pairs, the class label when many images share one caption.

    Ties (items scoring exactly alike, as repeated captions do) are counted as their expected value over
    a random order of the tied items (``hit_probability``), so R@k does not depend on which other k are
    requested nor on how a sort happens to break them. Without ties this is CLIP_benchmark's recall@k."""
    similarity = image_features @ text_features.T
    out: dict[str, float] = {}
    for direction, sims, query_groups, item_groups in (
        ("image_to_text", similarity, image_groups, text_groups),
        ("text_to_image", similarity.T, text_groups, image_groups),
    ):
        positives = item_groups[None, :] == query_groups[:, None]
        for k in ks:
            out[f"{direction}_R@{k}"] = float(hit_probability(sims, positives, k).mean())
    return out


def hit_probability(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """Per query row, the probability that a positive item is among the k best-scoring items when items
    with equal scores are put in a random order: with g negatives scoring strictly above the best
    positive, and n negatives and p positives tied with it, 1 - C(n, k-g) / C(n+p, k-g) (the chance
    that the first k-g tied places all hold negatives, hypergeometric); 0 when k <= g or no positive."""
    scores = scores.double()
    best = torch.where(positives, scores, torch.tensor(float("-inf"), dtype=scores.dtype)).max(dim=1).values
    negatives = ~positives
    above = ((scores > best[:, None]) & negatives).sum(dim=1)
    tied = scores == best[:, None]
    tied_neg = (tied & negatives).sum(dim=1).double()
    tied_all = tied_neg + (tied & positives).sum(dim=1).double()
    slots = (k - above).double()
    # C(n, m) / C(t, m) = n! (t-m)! / ((n-m)! t!), through log-gamma; m > n makes it 0
    m = slots.clamp(min=0).minimum(tied_neg)
    all_negative = torch.exp(
        torch.lgamma(tied_neg + 1)
        - torch.lgamma(tied_neg - m + 1)
        - torch.lgamma(tied_all + 1)
        + torch.lgamma(tied_all - m + 1)
    )
    all_negative = torch.where(slots > tied_neg, torch.zeros_like(all_negative), all_negative)
    hit = torch.where(slots > 0, 1 - all_negative, torch.zeros_like(all_negative))
    return torch.where(positives.any(dim=1), hit, torch.zeros_like(hit))


def compositional_accuracy(
    caption_scores: torch.Tensor, perturbed_scores: torch.Tensor, valid: torch.Tensor, names: Sequence[str]
) -> dict[str, float | int]:
    """ARO-style accuracy (Yuksekgonul et al. 2023, §3): the fraction of images whose caption scores strictly
    above every reordered copy of it (a tie, as a bag-of-words model gives, is a miss); per perturbation, the
    fraction of its pairs won. ``perturbed_scores``/``valid``: [images, perturbations]; ``chance`` is the
    accuracy of random scores."""
    wins = caption_scores[:, None] > perturbed_scores
    probed = valid.any(dim=1)
    out: dict[str, float | int] = {
        "accuracy": float((wins | ~valid).all(dim=1)[probed].float().mean()),
        "chance": float((1 / (1 + valid.sum(dim=1)[probed].float())).mean()),
        "images": int(probed.sum()),
    }
    for k, name in enumerate(names):
        if valid[:, k].any():
            out[f"accuracy_{name}"] = float(wins[:, k][valid[:, k]].float().mean())
    return out


def normalize_answer(text: str) -> str:
    """Lower-cased, punctuation removed, whitespace collapsed (the VQA answer normalisation, Antol et al.
    2015, without its article and number-word rules)."""
    import re

    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after ``normalize_answer``."""
    hits = [normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True)]
    return sum(hits) / len(hits) if hits else 0.0
