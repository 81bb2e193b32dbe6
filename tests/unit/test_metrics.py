"""Pure functions: evaluation metrics, LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from vlmforge.evaluate.metrics import retrieval_recall, topk_accuracy, zero_shot_classifier
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


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_constant(50, 10, 100) == 1.0
