"""The losses of RLHF on summed answer log-probs: the reward model's Bradley-Terry loss, and RLOO's
KL-penalised rewards, leave-one-out advantages and REINFORCE loss.

Samples of one RLOO step are laid out answer-major, as TRL's ``RLOOTrainer`` lays them out: row
``j * prompts + i`` is the j-th answer to prompt i, so ``rewards.view(k, prompts)`` puts each prompt's k
answers in one column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """-log sigmoid(r_chosen - r_rejected) on scalar rewards [B] (Ouyang et al. 2022, eq. 1; TRL
    ``RewardTrainer.compute_loss``); ``accuracy``: the fraction of pairs whose chosen reward is higher."""
    margin = chosen - rejected
    return {
        "loss": -F.logsigmoid(margin).mean(),
        "accuracy": (margin.detach() > 0).float().mean(),
        "margin": margin.detach().mean(),
        "chosen_score": chosen.detach().mean(),
        "rejected_score": rejected.detach().mean(),
    }


def kl_penalised_rewards(
    scores: torch.Tensor, policy_logps: torch.Tensor, reference_logps: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """score - kl_coef * log(policy / reference) of each whole answer [N] (Ahmadian et al. 2024, sec. 2;
    TRL ``RLOOTrainer``: ``rewards + (-kl_coef * kl).sum(1)``); no gradient flows through it."""
    return (scores - kl_coef * (policy_logps - reference_logps)).detach()


def leave_one_out_advantages(rewards: torch.Tensor, samples_per_prompt: int) -> torch.Tensor:
    """r_j - mean of the other k-1 rewards to the same prompt, for answer-major rewards [k * prompts]
    (Ahmadian et al. 2024, eq. 6; TRL ``RLOOTrainer``: ``(rlhf_reward.sum(0) - rlhf_reward) / (k - 1)``)."""
    grouped = rewards.view(samples_per_prompt, -1)
    baseline = (grouped.sum(0, keepdim=True) - grouped) / (samples_per_prompt - 1)
    return (grouped - baseline).flatten()


def reinforce_loss(policy_logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean(advantage * log pi(answer)): the REINFORCE estimator of one on-policy update (Williams 1992;
    TRL ``RLOOTrainer``: ``torch.mean(-advantages * logprobs.sum(1))``)."""
    return -(advantages.detach() * policy_logps).mean()
