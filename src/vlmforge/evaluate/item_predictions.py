"""Per-item predictions of the evaluation tasks (``<task>.predictions.jsonl``): one dict per evaluated image,
query or pair, built from the same scores the task's metrics are computed from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def zero_shot_rows(
    logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], top: int = 5
) -> list[dict[str, Any]]:
    """Per image: its index, label and predicted class (ids and names) and its ``top`` best classes."""
    best = logits.topk(min(top, logits.shape[1]), dim=1).indices.tolist()
    return [
        {
            "index": i,
            "label": int(label),
            "label_name": classnames[int(label)],
            "predicted": ranked[0],
            "predicted_name": classnames[ranked[0]],
            f"top{top}": ranked,
        }
        for i, (label, ranked) in enumerate(zip(labels.tolist(), best, strict=True))
    ]


def first_hit_ranks(
    similarity: torch.Tensor, query_groups: torch.Tensor, item_groups: torch.Tensor
) -> torch.Tensor:
    """Per query (row), the 1-based rank of its best-scoring matching item: one more than the number of
    items scoring strictly above it (ties count in the query's favour, as ``topk`` recall treats them
    when no item ties). A query with no matching item gets rank ``items + 1``."""
    matches = query_groups[:, None] == item_groups[None, :]
    best_hit = similarity.masked_fill(~matches, float("-inf")).max(dim=1).values
    ranks = (similarity > best_hit[:, None]).sum(dim=1) + 1
    return torch.where(matches.any(dim=1), ranks, torch.full_like(ranks, similarity.shape[1] + 1))


def retrieval_rows(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_groups: torch.Tensor,
    text_groups: torch.Tensor,
    k: int,
) -> list[dict[str, Any]]:
    """Per query, both directions: the indices of its ``k`` best items and the rank of its first hit."""
    similarity = image_features @ text_features.T
    rows: list[dict[str, Any]] = []
    for direction, sims, query_groups, item_groups in (
        ("image_to_text", similarity, image_groups, text_groups),
        ("text_to_image", similarity.T, text_groups, image_groups),
    ):
        retrieved = sims.topk(min(k, sims.shape[1]), dim=1).indices.tolist()
        ranks = first_hit_ranks(sims, query_groups, item_groups).tolist()
        rows += [
            {"direction": direction, "query": q, "retrieved": found, "first_hit_rank": rank}
            for q, (found, rank) in enumerate(zip(retrieved, ranks, strict=True))
        ]
    return rows


def recall_at(ranks: Sequence[int], k: int) -> float:
    """The fraction of queries whose first hit is within the ``k`` best items."""
    return sum(rank <= k for rank in ranks) / len(ranks) if ranks else 0.0


def compositional_rows(
    caption_scores: torch.Tensor, perturbed_scores: torch.Tensor, valid: torch.Tensor, names: Sequence[str]
) -> list[dict[str, Any]]:
    """Per image: its caption's score and each perturbation's (None where it does not apply)."""
    return [
        {
            "index": i,
            "caption_score": float(caption_scores[i]),
            "perturbed_scores": {
                name: float(perturbed_scores[i, k]) if valid[i, k] else None for k, name in enumerate(names)
            },
        }
        for i in range(len(caption_scores))
    ]


def probe_rows(labels: Sequence[int], predicted: Sequence[int]) -> list[dict[str, Any]]:
    """Per test image: its label and the probe's prediction."""
    return [
        {"index": i, "label": int(label), "predicted": int(guess)}
        for i, (label, guess) in enumerate(zip(labels, predicted, strict=True))
    ]


def preference_rows(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> list[dict[str, Any]]:
    """Per pair: the DPO rewards beta * log(policy / reference) of its chosen and rejected answers."""
    return [
        {"index": i, "chosen_reward": float(chosen), "rejected_reward": float(rejected)}
        for i, (chosen, rejected) in enumerate(zip(chosen_rewards, rejected_rewards, strict=True))
    ]
