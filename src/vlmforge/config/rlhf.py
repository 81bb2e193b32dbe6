"""Sections of an align recipe for RLHF (LLaVA-RLHF, Sun et al. 2023): the reward model and the RLOO
policy-gradient step that optimises a policy against it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from vlmforge.config.base import Section


class RewardConfig(Section):
    """`method: reward_model`: the finetuned model with a scalar head on its last answer token, trained
    on the preference pairs with the Bradley-Terry loss."""

    facts: bool = Field(
        False,
        description="Factually augmented reward (LLaVA-RLHF's Fact-RLHF): the reward model reads each pair's "
        "`facts` about the image (captions, ground-truth answers or options) before the question, so that "
        "it can tell a hallucinated answer from a grounded one. The data must give facts.",
    )


class RlooConfig(Section):
    """`method: rloo`: REINFORCE Leave-One-Out (Ahmadian et al. 2024). k answers are sampled per prompt
    and scored by the reward model less a KL penalty to the reference; each answer's baseline is the mean
    reward of the other k-1, so no value network is trained (cheaper and simpler than PPO)."""

    reward_run: Path = Field(
        description="A `method: reward_model` align run directory, or a folder of runs whose newest "
        "completed one is taken: its reward model scores the sampled answers."
    )
    samples_per_prompt: int = Field(4, ge=2, description="k: answers sampled per prompt (the LOO group).")
    kl_coef: float = Field(
        0.05, ge=0, description="Weight of the KL penalty log(policy / reference) subtracted from the reward."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="Sampling temperature of the answers; their log-probs (gradient, KL) are the model's "
        "own, so 1 keeps the update on-policy.",
    )
    max_new_tokens: int = Field(8, ge=1, description="Longest sampled answer, in tokens.")
    eval_every_steps: int | None = Field(
        None,
        ge=1,
        description="Held-out VQA accuracy (greedy answers) logged every this many steps (a multiple of "
        "train.log_every_steps); unset: only after training.",
    )
    eval_samples: int = Field(64, ge=1, description="Held-out prompts of that periodic VQA accuracy.")
