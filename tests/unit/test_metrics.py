"""Pure functions: evaluation metrics, LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from vlmforge.evaluate.metrics import hit_probability, retrieval_recall, topk_accuracy, zero_shot_classifier
from vlmforge.training.schedule import warmup_constant, warmup_cosine


def test_topk_accuracy_counts_hits() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2])
    acc = topk_accuracy(logits, labels, ks=(1, 2))
    assert acc["top1"] == pytest.approx(1 / 3)
    assert acc["top2"] == pytest.approx(2 / 3)


def test_zero_shot_classifier_averages_normalised_prompts() -> None:
    prompts = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[-1.0, 0.0], [-3.0, 0.0]]])
    classifier = zero_shot_classifier(prompts)
    assert classifier.shape == (2, 2)
    assert torch.allclose(classifier[:, 0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(classifier[:, 1], torch.tensor([-1.0, 0.0]))


def test_retrieval_recall_pair_and_label_matching() -> None:
    images = torch.eye(3)
    texts = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pairs = retrieval_recall(images, texts, torch.arange(3), torch.arange(3), ks=(1, 2))
    assert pairs["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert pairs["text_to_image_R@1"] == pytest.approx(1 / 3)
    labels = torch.tensor([0, 0, 1])  # images 0 and 1 share a class: swapping them is a hit
    by_label = retrieval_recall(images, texts, labels, labels, ks=(1,))
    assert by_label["image_to_text_R@1"] == pytest.approx(1.0)


def _recall_over_all_tie_orders(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Brute force: the mean over every order of the items (ties in every order) of 'a positive in the
    first k' -- what the expected-value rule must equal."""
    import itertools

    rows = []
    for row, pos in zip(scores.tolist(), positives.tolist(), strict=True):
        orders = list(itertools.permutations(range(len(row))))
        ranked = [o for o in orders if all(row[a] >= row[b] for a, b in itertools.pairwise(o))]
        rows.append(sum(any(pos[i] for i in o[:k]) for o in ranked) / len(ranked))
    return sum(rows) / len(rows)


def test_retrieval_ties_count_as_their_expected_value_whatever_k_are_asked() -> None:
    # five captions, two pairs of them identical: images 0/1 and 2/3 cannot tell their captions apart
    texts = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])
    )
    images = torch.nn.functional.normalize(texts + 0.1 * torch.tensor([[0, 1.0, 1]] * 5))
    groups = torch.arange(5)
    alone = retrieval_recall(images, texts, groups, groups, ks=(1,))
    with_more = retrieval_recall(images, texts, groups, groups, ks=(1, 2, 5))
    assert alone["image_to_text_R@1"] == with_more["image_to_text_R@1"]
    # images 0-3 each tie their own caption with its twin: half a hit each; image 4 a full hit
    assert alone["image_to_text_R@1"] == pytest.approx((4 * 0.5 + 1) / 5)
    assert with_more["image_to_text_R@2"] == pytest.approx(1.0)
    sims = images @ texts.T
    positives = groups[None, :] == groups[:, None]
    for k in (1, 2, 3):
        expected = _recall_over_all_tie_orders(sims, positives, k)
        assert with_more.get(f"image_to_text_R@{k}", None) in (None, pytest.approx(expected))
        assert float(hit_probability(sims, positives, k).mean()) == pytest.approx(expected)


def test_hit_probability_matches_brute_force_on_random_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (6, 6), generator=generator).double()  # many ties
    positives = torch.rand(6, 6, generator=generator) < 0.3
    positives[0] = False  # a query without any positive scores 0
    for k in (1, 2, 4, 6):
        expected = _recall_over_all_tie_orders(scores, positives, k)
        assert float(hit_probability(scores, positives, k).mean()) == pytest.approx(expected)


def test_retrieval_without_ties_is_topk_recall() -> None:
    """CLIP_benchmark's recall@k: a positive among torch.topk's k best (no ties in random features)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(20, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(20, 8, generator=generator), dim=-1)
    labels = torch.arange(20) % 4
    ours = retrieval_recall(images, texts, labels, labels, ks=(1, 5))
    sims = images @ texts.T
    for k in (1, 5):
        top = sims.topk(k, dim=1).indices
        expected = float((labels[top] == labels[:, None]).any(dim=1).float().mean())
        assert ours[f"image_to_text_R@{k}"] == pytest.approx(expected)


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_constant(50, 10, 100) == 1.0
