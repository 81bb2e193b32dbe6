"""LightningModule of `vlmforge align` with ``method: rloo``: REINFORCE Leave-One-Out (Ahmadian et al.
2024) against a reward model, starting from a finetuned LLaVA.

Each step samples k answers per prompt from the policy, scores them with the frozen reward model, and
subtracts a KL penalty to the reference, which is found as DPO finds it (``AlignModule``): the policy
with its LoRA adapters switched off, or a frozen copy. Each answer's baseline is the mean penalised
reward of the other k-1 answers to its prompt, so no value network is trained: one policy update per
batch of samples, on-policy, with the REINFORCE loss. The reward model is kept out of the module's
children (like the frozen reference) so that the optimizer and checkpoints never see it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.rlhf import RlooConfig
from vlmforge.config.schema import AlignRecipe
from vlmforge.data.preferences import PreferenceSet
from vlmforge.data.rollouts import answered_batch, collate_prompts, cut_at_eos, reward_batch
from vlmforge.models.llava import sequence_logps
from vlmforge.rlhf_losses import kl_penalised_rewards, leave_one_out_advantages, reinforce_loss
from vlmforge.training.align import AlignModule
from vlmforge.training.module import FitSettings


@dataclass(frozen=True)
class RewardScorer:
    """A reward run's frozen model, its tokenizer and prompt layout, and whether it reads facts."""

    model: Any  # RewardModel
    tokenizer: Any
    shape: tuple[int, int, int]  # (image tokens, <image> id, max text tokens)
    facts: bool

    @torch.no_grad()
    def scores(self, data: PreferenceSet, indices: list[int], answers: list[str]) -> torch.Tensor:
        batch = reward_batch(data, indices, answers, self.tokenizer, self.facts, self.shape)
        device = self.model.head.weight.device
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return self.model(moved)


@torch.no_grad()
def sample_answers(
    model: Any, batch: dict[str, Any], rloo: RlooConfig, k: int, tokens: tuple[int, int]
) -> list[list[int]]:
    """k answers to each prompt of a ``collate_prompts`` batch (answer-major rows, each cut after its
    ``</s>``): plain ancestral sampling at ``rloo.temperature`` (no top-k / top-p truncation). The
    ``<image>`` placeholder and padding are never sampled: an answer holding one would not re-encode."""
    eos, pad = tokens
    image_id = int(model.config.image_token_index)
    device = next(model.parameters()).device
    pixels = batch["pixel_values"]
    out = model.generate(
        input_ids=batch["prompt_ids"].to(device).repeat(k, 1),
        attention_mask=batch["prompt_mask"].to(device).repeat(k, 1),
        pixel_values=None if pixels is None else pixels.to(device).repeat(k, 1, 1, 1),
        max_new_tokens=rloo.max_new_tokens,
        do_sample=True,
        temperature=rloo.temperature,
        top_k=0,
        top_p=1.0,
        eos_token_id=eos,
        pad_token_id=pad,
        suppress_tokens=[image_id, pad],
    )
    return cut_at_eos(out[:, batch["prompt_ids"].shape[1] :].tolist(), eos)


class RlooModule(AlignModule):
    """``train_data`` is a ``PromptSamples`` of the training pairs; ``heldout_accuracy(model)`` gives the
    held-out VQA accuracy logged every ``rloo.eval_every_steps`` (the caller's: evaluation sits above)."""

    def __init__(
        self,
        recipe: AlignRecipe,
        vocab_size: int,
        settings: FitSettings,
        tokens: tuple[int, int],
        init_weights: Path,
        scorer: RewardScorer,
        tokenizer: Any,
        heldout_accuracy: Callable[[torch.nn.Module], float],
    ) -> None:
        super().__init__(recipe, vocab_size, settings, tokens, init_weights)
        assert recipe.rloo is not None
        self.rloo = recipe.rloo
        self.pad_id = tokens[1]
        self.collate = functools.partial(collate_prompts, pad_id=self.pad_id)
        self.scorer = (scorer,)  # a tuple: not a child module
        self.tokenizer = tokenizer
        self.heldout_accuracy = heldout_accuracy

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.scorer[0].model.to(self.device)

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        eos = int(self.tokenizer.eos_token_id)
        answers = sample_answers(
            self.model, batch, self.rloo, self.rloo.samples_per_prompt, (eos, self.pad_id)
        )
        rows = answered_batch(batch["prompts"], answers, batch["images"], self.pad_id)
        rows = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in rows.items()}
        policy, reference = sequence_logps(self.model, rows), self.reference_logps(rows)
        texts = self.tokenizer.batch_decode(answers, skip_special_tokens=True)
        scores = self.scorer[0].scores(self.train_data.data, batch["index"].tolist(), texts).to(policy)
        rewards = kl_penalised_rewards(scores, policy, reference, self.rloo.kl_coef)
        advantages = leave_one_out_advantages(rewards, self.rloo.samples_per_prompt)
        return {
            "loss": reinforce_loss(policy, advantages),
            "reward": scores.mean(),
            "kl": (policy - reference).detach().mean(),
            "penalised_reward": rewards.mean(),
            "answer_tokens": torch.tensor([len(a) for a in answers], dtype=torch.float).mean(),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        every, step = self.rloo.eval_every_steps, self.trainer.global_step + 1  # the step this batch ends
        ends_step = (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
        if every is not None and ends_step and (step % every == 0 or step == self.trainer.max_steps):
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                accuracy = self.heldout_accuracy(self.model)
            self.model.train(was_training)
            self.last_terms["heldout_vqa_accuracy"] = torch.tensor(accuracy)
        return loss
