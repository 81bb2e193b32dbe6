"""RLHF in `vlmforge align`: the reward model's and RLOO's losses against TRL's formulas, the facts a
factually augmented reward model reads, the rollout batches, the reward head, and the recipes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import DigitsPreferences, PreferenceJsonData
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import IGNORE_INDEX, IMAGE, build_tokenizer, template_texts
from vlmforge.data.preferences import (
    PreferenceSamples,
    collate_preferences,
    fact_prompt,
    preference_json,
    split_preferences,
)
from vlmforge.data.rollouts import answered_batch, cut_at_eos, reward_batch
from vlmforge.errors import UserError
from vlmforge.models.reward import last_answer_positions
from vlmforge.rlhf_losses import (
    bradley_terry_loss,
    kl_penalised_rewards,
    leave_one_out_advantages,
    reinforce_loss,
)

pytest.importorskip("transformers")

REWARD_TINY = find_recipe("debug/llava-reward-tiny")
RLOO_TINY = find_recipe("debug/llava-rloo-tiny")

# Reference values: TRL's formulas transcribed into a throw-away script from huggingface/trl
# trl/trainer/rloo_trainer.py at commit bfe20756082488350091352d1cdc19c172e42cd8 (the training loop around
# L433: kl = logprobs - ref_logprobs; non_score_reward = (-kl_coef * kl).sum(1); rlhf_reward = rewards +
# non_score_reward, reshaped to (rloo_k, -1); baseline = (rlhf_reward.sum(0) - rlhf_reward) / (rloo_k - 1);
# loss = torch.mean(-advantages * logprobs.sum(1))) and trl/trainer/reward_trainer.py compute_loss
# (-logsigmoid(rewards_chosen - rewards_rejected).mean()), run with torch 2.14 on the inputs below.
LOGPROBS = [
    [-0.5, -1.0, -0.2],
    [-2.0, -0.1, -0.3],
    [-0.7, -0.7, -0.7],
    [-1.5, -0.2, -0.1],
    [-0.3, -0.9, -1.1],
    [-0.05, -0.4, -2.0],
]  # per token, 6 answers answer-major: k = 3 answers to each of 2 prompts
REF_LOGPROBS = [
    [-0.6, -0.8, -0.4],
    [-1.5, -0.3, -0.3],
    [-0.9, -0.5, -0.6],
    [-1.0, -0.6, -0.2],
    [-0.4, -1.2, -0.8],
    [-0.1, -0.3, -1.5],
]
SCORES = [0.8, -0.3, 1.5, 0.2, -1.0, 0.6]
TRL_PENALISED = [
    0.7900000214576721,
    -0.27000001072883606,
    1.5099999904632568,
    0.2,
    -1.0099999904632568,
    0.655,
]
TRL_ADVANTAGES = [
    0.5400000810623169,
    -0.6974999904632568,
    1.62,
    0.007499977946281433,
    -2.16,
    0.690000057220459,
]
TRL_LOSS = -0.10299988836050034
TRL_REWARD_LOSS = 0.574037492275238  # chosen [1.2, -0.4, 0.3, 2.0], rejected [0.2, 0.5, 0.3, -1.0]


# ---------------------------------------------------------------------------------------- losses
def test_rloo_rewards_advantages_and_loss_match_trl() -> None:
    policy = torch.tensor(LOGPROBS).sum(1).requires_grad_()
    reference = torch.tensor(REF_LOGPROBS).sum(1)
    rewards = kl_penalised_rewards(torch.tensor(SCORES), policy, reference, kl_coef=0.1)
    assert rewards.tolist() == pytest.approx(TRL_PENALISED, abs=1e-6) and not rewards.requires_grad
    advantages = leave_one_out_advantages(rewards, samples_per_prompt=3)
    assert advantages.tolist() == pytest.approx(TRL_ADVANTAGES, abs=1e-6)
    loss = reinforce_loss(policy, advantages)
    assert float(loss.detach()) == pytest.approx(TRL_LOSS, abs=1e-6)
    loss.backward()  # the gradient of each answer's log-prob is -advantage / N: advantages are constants
    assert policy.grad is not None
    assert policy.grad.tolist() == pytest.approx([-a / 6 for a in TRL_ADVANTAGES], abs=1e-6)


def test_leave_one_out_baseline_matches_trls_own_loop_example() -> None:
    # huggingface/trl tests/test_rloo_trainer.py::test_rloo_reward (same commit): k = 4 rewards to 3
    # prompts; its loop asserts advantage[0] = 1 - (2 + 5 + 8) / 3 and advantage[7] = 6 - (3 + 2 + 9) / 3
    rewards = torch.tensor([1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 9, 10]).float()
    advantages = leave_one_out_advantages(rewards, samples_per_prompt=4)
    assert float(advantages[0]) == pytest.approx(1 - (2 + 5 + 8) / 3)
    assert float(advantages[7]) == pytest.approx(6 - (3 + 2 + 9) / 3)
    assert float(advantages.view(4, 3).sum(0).abs().max()) < 1e-5  # each prompt's advantages sum to 0


def test_bradley_terry_loss_matches_trl_and_hand_values() -> None:
    chosen, rejected = torch.tensor([1.2, -0.4, 0.3, 2.0]), torch.tensor([0.2, 0.5, 0.3, -1.0])
    terms = bradley_terry_loss(chosen, rejected)
    assert float(terms["loss"]) == pytest.approx(TRL_REWARD_LOSS, abs=1e-6)
    assert float(terms["accuracy"]) == 0.5  # the tie is not a preference
    assert float(terms["margin"]) == pytest.approx((1.0 - 0.9 + 0.0 + 3.0) / 4)
    same = bradley_terry_loss(torch.zeros(3), torch.zeros(3))
    assert float(same["loss"]) == pytest.approx(math.log(2))


def test_image_accuracy_needs_the_chosen_answer_above_every_rejected_one() -> None:
    from vlmforge.evaluate.rlhf import image_accuracy

    chosen = torch.tensor([2.0, 2.0, 2.0, 1.0, 1.0, 0.0])
    rejected = torch.tensor([1.0, 0.0, 3.0, 0.0, 0.5, -1.0])  # image 0 loses its third pair
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    assert image_accuracy(chosen, rejected, groups) == pytest.approx(2 / 3)
    assert float(bradley_terry_loss(chosen, rejected)["accuracy"]) == pytest.approx(5 / 6)


# ----------------------------------------------------------------------------------------- facts
def _pairs(tmp_path: Path, entries: list[dict]) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(entries))
    return path


def _entry(**extra: object) -> dict[str, object]:
    return {
        "id": "p",
        "image": "a.png",
        "prompt": "What colour?",
        "chosen": "red",
        "rejected": "blue",
    } | extra


def test_fact_prompt_states_the_facts_after_the_image_and_before_the_question() -> None:
    assert fact_prompt(f"{IMAGE}\nWhat colour?", ["a red square", "answer: red"]) == (
        f"{IMAGE}\nFacts about the image: a red square; answer: red.\nWhat colour?"
    )
    assert fact_prompt("What colour?", ["red"]) == "Facts about the image: red.\nWhat colour?"
    assert fact_prompt("What colour?", []) == "What colour?"


def test_facts_are_read_from_the_json_and_bad_ones_are_named(tmp_path: Path) -> None:
    path = _pairs(tmp_path, [_entry(facts=["a red square", " "]), _entry(facts="red"), _entry()])
    data = preference_json(PreferenceJsonData(path=path), 16)
    assert [data.facts_of(i) for i in range(3)] == [["a red square"], ["red"], []]
    with pytest.raises(UserError, match=r"entry 1: 'facts' must be a text or a list of texts") as info:
        preference_json(PreferenceJsonData(path=_pairs(tmp_path, [_entry(), _entry(facts=3)])), 16)
    assert str(tmp_path / "pairs.json") in info.value.message
    no_facts = preference_json(PreferenceJsonData(path=_pairs(tmp_path, [_entry()])), 16)
    with pytest.raises(UserError, match="gives no facts") as info:
        no_facts.with_facts()
    assert "reward.facts=false" in (info.value.hint or "")


def _digits() -> tuple:
    train, val = split_preferences(DigitsPreferences(), 16)
    tokenizer = build_tokenizer("word", [*template_texts(), *train.texts(), "facts about the image"])
    return train, val, tokenizer


def test_the_facts_reach_the_reward_models_input_in_training_and_in_rloo() -> None:
    train, _, tokenizer = _digits()
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    digit = train.answers["chosen"][train.global_index(0)]
    assert train.facts_of(0) == [digit]  # the digits' fact is the ground-truth digit

    samples = PreferenceSamples(train.with_facts(), tokenizer, 16, image_id, 40)  # reward model training
    batch = collate_preferences([samples[(0, 0, 0)]], int(tokenizer.pad_token_id))
    prompts = [tokenizer.decode(batch["input_ids"][r][batch["labels"][r] == IGNORE_INDEX]) for r in (0, 1)]
    assert all(f"facts about the image : {digit}" in p for p in prompts)
    plain = collate_preferences([PreferenceSamples(train, tokenizer, 16, image_id, 40)[(0, 0, 0)]], 0)
    assert "facts" not in tokenizer.decode(plain["input_ids"][0])

    for facts in (True, False):  # the RL step: the policy's answers, in the reward model's prompt
        rows = reward_batch(
            train, [0, 1], ["seven", "two", "one", "six"], tokenizer, facts, (16, image_id, 40)
        )
        texts = [tokenizer.decode(ids) for ids in rows["input_ids"]]
        assert rows["input_ids"].shape[0] == 4 and rows["pixel_values"].shape == (4, 3, 16, 16)
        for r, text in enumerate(texts):
            fact = f"facts about the image : {train.facts_of(r % 2)[0]}"
            assert (fact in text) == facts
        answers = [
            tokenizer.decode(ids[labels != IGNORE_INDEX])
            for ids, labels in zip(rows["input_ids"], rows["labels"], strict=True)
        ]
        assert answers == ["seven </s>", "two </s>", "one </s>", "six </s>"]


# -------------------------------------------------------------------------------------- rollouts
def test_sampled_answers_are_cut_after_eos_and_labelled_after_their_prompt() -> None:
    assert cut_at_eos([[5, 6, 2, 0, 0], [7, 8, 9], [2, 0]], eos=2) == [[5, 6, 2], [7, 8, 9], [2]]
    images = [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]
    rows = answered_batch([[1, 9], [1, 8, 8]], [[5, 2], [6, 7, 2], [4, 2], [3, 2]], images, pad_id=0)
    assert rows["input_ids"].tolist() == [
        [1, 9, 5, 2, 0, 0],
        [1, 8, 8, 6, 7, 2],
        [1, 9, 4, 2, 0, 0],
        [1, 8, 8, 3, 2, 0],
    ]
    assert rows["labels"][1].tolist() == [IGNORE_INDEX] * 3 + [6, 7, 2]
    assert rows["labels"][3].tolist() == [IGNORE_INDEX] * 3 + [3, 2, IGNORE_INDEX]
    assert rows["pixel_values"][3].mean() == 1  # answer 3 belongs to prompt 3 % 2 = 1
    # the reward is read at each answer's last token before its </s> (id 2), at </s> for an empty answer
    assert last_answer_positions(rows["labels"], eos_id=2).tolist() == [2, 4, 2, 3]
    empty = answered_batch([[1, 9]], [[2], [5, 6]], [None], pad_id=0)["labels"]
    assert last_answer_positions(empty, eos_id=2).tolist() == [2, 3]  # [1, 9, </s>], [1, 9, 5, 6]


# ---------------------------------------------------------------------------------------- recipes
def test_rlhf_recipes_validate_and_say_what_is_missing() -> None:
    reward = load_recipe("align", REWARD_TINY)
    assert reward.method == "reward_model" and reward.reward.facts and reward.eval == []
    rloo = load_recipe("align", RLOO_TINY)
    assert rloo.method == "rloo" and rloo.rloo is not None and rloo.rloo.samples_per_prompt == 8
    with pytest.raises(UserError, match="method: rloo needs the rloo section"):
        load_recipe("align", RLOO_TINY, ["rloo=null"])
    with pytest.raises(UserError, match="does not apply to an align run of method reward_model"):
        load_recipe("align", REWARD_TINY, ["eval=[{kind: vqa}]"])
    with pytest.raises(UserError, match="'preference' does not apply to an align run of method rloo"):
        load_recipe("align", RLOO_TINY, ["eval=[{kind: preference}]"])
    with pytest.raises(UserError, match=r"multiple of train\.log_every_steps"):
        load_recipe("align", RLOO_TINY, ["rloo.eval_every_steps=7"])
    with pytest.raises(UserError, match="samples_per_prompt"):
        load_recipe("align", RLOO_TINY, ["rloo.samples_per_prompt=1"])


def test_a_reward_model_run_is_not_evaluated_as_a_policy(tmp_path: Path) -> None:
    from vlmforge.runs.artifacts import load_aligned

    (tmp_path / "recipe.yaml").write_text(REWARD_TINY.read_text())
    with pytest.raises(UserError, match="is a reward model run") as info:
        load_aligned(tmp_path)
    assert "method: rloo" in (info.value.hint or "")


def test_rloo_plans_only_data_parallel_layouts() -> None:
    """RLOO samples answers with the whole policy on every device (the recipe refuses FSDP/DeepSpeed): the
    planner's layout search keeps to DDP for it, where a sharded layout would fit an ordinary phase."""
    from dataclasses import replace

    from vlmforge.planning.accelerators import load_catalog, lookup
    from vlmforge.planning.layouts import choose
    from vlmforge.planning.phases import PhaseCost

    a100 = lookup(load_catalog(), "a100-80gb")
    # 7B trainable parameters: 16 B each under DDP (112 GB) does not fit 80 GB; sharded over 8 GPUs it does
    cost = PhaseCost("rl", 1e12, 1000, 1e15, 7_000_000_000, 0, 1_000_000, 64, 8)
    sharded = choose(a100, 8, cost, "bf16-mixed")
    assert not isinstance(sharded, str) and sharded[0].strategy != "ddp"
    assert isinstance(choose(a100, 8, replace(cost, replicated=True), "bf16-mixed"), str)  # nothing fits
