"""Held-out evaluation of the RLHF methods of `vlmforge align`: a reward model's pairwise accuracy on the
held-out preference pairs, and what an RLOO policy gained over its start in the reward model's eyes and
how far it moved from it (KL)."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.data.preferences import PreferenceSamples, PreferenceSet, collate_preferences
from vlmforge.rlhf_losses import bradley_terry_loss


@torch.no_grad()
def pairwise_accuracy(
    reward: Any, data: PreferenceSet, tokenizer: Any, max_text: int, batch_size: int = 64
) -> dict[str, float]:
    """The reward model's Bradley-Terry loss, accuracy (chosen scored higher), mean margin and image
    accuracy (below) over the pairs of ``data`` (with their facts already in the prompts when the reward
    model reads them)."""
    image_id, image_tokens = (
        int(reward.llava.config.image_token_index),
        int(reward.llava.config.image_seq_length),
    )
    samples = PreferenceSamples(data, tokenizer, image_tokens, image_id, max_text)
    scores = []
    for start in range(0, len(data), batch_size):
        items = [samples[(0, 0, i)] for i in range(start, min(start + batch_size, len(data)))]
        scores.append(reward(collate_preferences(items, int(tokenizer.pad_token_id))).view(2, -1))
    chosen, rejected = torch.cat(scores, 1)
    terms = bradley_terry_loss(chosen, rejected)
    groups = torch.tensor([data.image_group(i) for i in range(len(data))])
    return {"pairwise_accuracy": float(terms["accuracy"]), "margin": float(terms["margin"])} | {
        "image_accuracy": image_accuracy(chosen, rejected, groups),
        "loss": float(terms["loss"]),
        "pairs": len(data),
    }


def image_accuracy(chosen: torch.Tensor, rejected: torch.Tensor, groups: torch.Tensor) -> float:
    """The fraction of images whose chosen answer outscores every rejected answer of its pairs [P]
    (``groups``: each pair's image): with all wrong answers rejected, how often the reward model's best
    answer is the right one, which a policy optimised against it needs."""
    won = chosen > rejected
    images = torch.unique(groups)
    return float(torch.stack([won[groups == g].all() for g in images]).float().mean())


@torch.no_grad()
def policy_gain(
    start: Any, policy: Any, scorer: Any, data: PreferenceSet, tokenizer: Any, rloo: Any, seed: int
) -> dict[str, float]:
    """On the first ``rloo.eval_samples`` held-out prompts: the reward model's mean score of the greedy
    answers of the starting model and of the trained policy, and KL(policy || start) estimated on one
    answer per prompt sampled from the policy (the mean summed log-ratio, as TRL logs ``objective/kl``)."""
    from vlmforge.data.rollouts import answered_batch, collate_prompts, cut_at_eos
    from vlmforge.evaluate.vqa import answer_ids, default_prompter
    from vlmforge.models.llava import sequence_logps
    from vlmforge.training.rloo import sample_answers

    count = min(len(data), rloo.eval_samples)
    indices = list(range(count))
    questions = [data.turns(i)[0][1] for i in indices]
    images = [data.image(i) for i in indices]
    eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    result: dict[str, float] = {"prompts": count}
    for name, model in (("start", start), ("policy", policy)):
        greedy = cut_at_eos(answer_ids(model, tokenizer, questions, images, rloo.max_new_tokens), eos)
        texts = tokenizer.batch_decode(greedy, skip_special_tokens=True)
        result[f"reward_{name}"] = float(scorer.scores(data, indices, texts).mean())
    result["reward_gain"] = result["reward_policy"] - result["reward_start"]
    prompter = default_prompter(policy, tokenizer, "chat")
    items = [
        {"prompt": prompter(q), "image": image, "index": i, "epoch": 0, "position": 0}
        for i, q, image in zip(indices, questions, images, strict=True)
    ]
    prompts = collate_prompts(items, pad)
    torch.manual_seed(seed)
    sampled = sample_answers(policy, prompts, rloo, 1, (eos, pad))
    rows = answered_batch(prompts["prompts"], sampled, images, pad)
    result["kl"] = float((sequence_logps(policy, rows) - sequence_logps(start, rows)).mean())
    return result
