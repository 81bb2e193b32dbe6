"""Preference evaluation of an align run on held-out pairs: the DPO rewards beta * log(policy / reference)
of the chosen and the rejected answers, and which answer each model alone finds more likely."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmforge.config.schema import PreferenceTask
from vlmforge.errors import UserError
from vlmforge.evaluate.item_predictions import preference_rows
from vlmforge.evaluate.results import PREDICTIONS


@dataclass(frozen=True)
class PreferenceReference:
    """The frozen reference of an align run and the beta its rewards are scaled by."""

    model: Any
    beta: float


@torch.no_grad()
def preference(context: Any, task: PreferenceTask) -> dict[str, Any]:
    """Reward accuracy and margin (``preference_loss``'s terms) and the likelihood preference of the
    policy and of the reference, over ``context.data`` (a ``PreferenceSet``)."""
    from vlmforge.data.preferences import PreferenceSamples, collate_preferences
    from vlmforge.losses import preference_loss
    from vlmforge.models.llava import sequence_logps

    reference: PreferenceReference | None = context.reference
    if reference is None or not hasattr(context.data, "answers"):
        raise UserError(
            "eval task 'preference' needs preference pairs and a reference model: it evaluates align runs",
            hint="drop it from the eval tasks of this run",
        )
    model, data = context.model, context.data
    image_id, image_tokens = int(model.config.image_token_index), int(model.config.image_seq_length)
    samples = PreferenceSamples(data, context.tokenizer, image_tokens, image_id, context.context_length)
    count = min(len(data), task.max_samples or len(data))
    logps: dict[str, list[torch.Tensor]] = {"policy": [], "reference": []}
    for start in range(0, count, context.batch_size):
        items = [samples[(0, 0, i)] for i in range(start, min(start + context.batch_size, count))]
        batch = collate_preferences(items, int(context.tokenizer.pad_token_id))
        for name, scorer in (("policy", model), ("reference", reference.model)):
            logps[name].append(sequence_logps(scorer, batch).view(2, -1))  # [chosen, rejected] x pairs
    policy, ref = torch.cat(logps["policy"], 1), torch.cat(logps["reference"], 1)
    terms = preference_loss(policy[0], policy[1], ref[0], ref[1], reference.beta)
    rewards = reference.beta * (policy - ref)  # [chosen, rejected] x pairs, as preference_loss scales them
    return {
        "reward_accuracy": float(terms["reward_accuracy"]),
        "reward_margin": float(terms["reward_margin"]),
        "dpo_loss": float(terms["loss"]),
        "policy_prefers_chosen": float((policy[0] > policy[1]).float().mean()),
        "reference_prefers_chosen": float((ref[0] > ref[1]).float().mean()),
        PREDICTIONS: preference_rows(rewards[0], rewards[1]),
    }
