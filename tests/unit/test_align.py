"""`vlmforge align`: the DPO / IPO loss, preference data (errors, drops, collation), the align recipe, and
finetune -> align end to end from the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import DigitsPreferences, PreferenceJsonData, recipe_verb
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import IGNORE_INDEX, IMAGE, build_tokenizer, template_texts
from vlmforge.data.preferences import (
    PreferenceSamples,
    collate_preferences,
    digits_preferences,
    preference_json,
    split_preferences,
)
from vlmforge.errors import UserError
from vlmforge.losses import answer_logps, chosen_nll, preference_loss

pytest.importorskip("transformers")
pytest.importorskip("peft")

DPO_TINY = find_recipe("debug/llava-dpo-tiny")


# ------------------------------------------------------------------------------------------ loss
def test_dpo_loss_and_rewards_match_hand_computed_values() -> None:
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2) = -1, so h = 2 and beta * h = 1
    logps = [torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0)]
    terms = preference_loss(*logps, beta=0.5)
    assert float(terms["loss"]) == pytest.approx(math.log(1 + math.exp(-1)))  # -log sigmoid(1)
    assert float(terms["chosen_reward"]) == pytest.approx(0.5)
    assert float(terms["rejected_reward"]) == pytest.approx(-0.5)
    assert float(terms["reward_margin"]) == pytest.approx(1.0)
    assert float(terms["reward_accuracy"]) == 1.0

    smoothed = preference_loss(*logps, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.exp(1))
    assert float(smoothed["loss"]) == pytest.approx(expected)
    # IPO: (h - 1 / (2 beta))^2 = (2 - 1)^2
    assert float(preference_loss(*logps, beta=0.5, kind="ipo")["loss"]) == pytest.approx(1.0)


def test_identical_policy_and_reference_give_log_2_and_no_reward() -> None:
    same = torch.tensor([-4.0, -1.5])
    terms = preference_loss(same, same - 1, same, same - 1, beta=0.1)
    assert float(terms["loss"]) == pytest.approx(math.log(2))
    assert float(terms["reward_accuracy"]) == 0.0  # ties are not preferences


def test_answer_logps_sum_only_the_labelled_tokens() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])  # token 1 predicted at position 0, token 0 at position 1
    assert float(answer_logps(logits, labels)[0]) == pytest.approx(math.log(0.25) + math.log(0.1))


def test_rpo_nll_is_the_chosen_answers_mean_token_cross_entropy() -> None:
    # TRL's DPOTrainer adds rpo_alpha x nll_loss, nll_loss being cross_entropy over the chosen rows'
    # shifted labels (ignore_index -100, mean over their tokens): the same formula through torch's own op
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 2], [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX]]
    )
    cross_entropy = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1)
    )
    assert float(chosen_nll(answer_logps(logits, labels), labels)) == pytest.approx(float(cross_entropy))


# ------------------------------------------------------------------------------------------ data
def _write_pairs(root: Path, entries: list[Any]) -> Path:
    from PIL import Image

    Image.new("RGB", (20, 24), (200, 10, 10)).save(root / "a.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    path = root / "prefs.json"
    path.write_text(json.dumps(entries))
    return path


def _pair(image: str | None = "a.png", chosen: str = "red", **extra: Any) -> dict[str, Any]:
    return {"id": "p", "image": image, "prompt": "What colour?", "chosen": chosen, "rejected": "blue"} | extra


def test_malformed_entry_names_the_file_and_index(tmp_path: Path) -> None:
    path = _write_pairs(tmp_path, [_pair(), {"id": "q", "prompt": "What colour?", "chosen": "red"}])
    with pytest.raises(UserError, match="needs text fields") as info:
        preference_json(PreferenceJsonData(path=path), 16)
    assert str(path) in info.value.message and "entry 1" in info.value.message


def test_unusable_pairs_are_dropped_with_a_reason(tmp_path: Path) -> None:
    entries = [
        _pair(),
        _pair(image=None),
        _pair(image="gone.png"),
        _pair(image="broken.png"),
        _pair(chosen=" "),
    ]
    path = _write_pairs(tmp_path, entries)
    data = preference_json(PreferenceJsonData(path=path, max_bad_fraction=1.0), 16)
    assert len(data) == 2  # the pair with an image and the text-only one
    report = data.tally.to_json()
    assert report["read"] == 5 and report["kept"] == 2
    assert report["dropped"] == {"decode_error": 1, "missing_image": 1, "empty_answer": 1}
    assert data.turns(0) == [("human", f"{IMAGE}\nWhat colour?"), ("gpt", "red")]  # image first
    assert data.turns(0, "rejected")[1] == ("gpt", "blue")
    assert data.image(0) is not None and data.image(0).shape == (3, 16, 16) and data.image(1) is None

    with pytest.raises(UserError, match=r"3 of 5 samples dropped"):
        preference_json(PreferenceJsonData(path=path), 16)  # the default budget is 1%


def test_digits_preferences_reject_a_wrong_digit_and_hold_out_a_fixed_split() -> None:
    data = digits_preferences(DigitsPreferences(), 16)
    chosen, rejected = data.answers["chosen"], data.answers["rejected"]
    assert len(data) == 1797 and all(c != r for c, r in zip(chosen, rejected, strict=True))
    assert len(set(rejected)) == 10  # wrong answers of every kind
    assert digits_preferences(DigitsPreferences(), 16).answers == data.answers  # seeded
    assert digits_preferences(DigitsPreferences(seed=1), 16).answers["rejected"] != rejected
    train, val = split_preferences(DigitsPreferences(), 16)
    again = split_preferences(DigitsPreferences(seed=5), 16)[1]
    assert len(train) + len(val) == 1797 and list(val.images.indices) == list(again.images.indices)


def test_digits_preferences_can_reject_every_wrong_digit_and_split_by_image() -> None:
    one = digits_preferences(DigitsPreferences(), 16)
    nine = digits_preferences(DigitsPreferences(rejected=9), 16)
    assert len(nine) == 9 * 1797 and nine.answers["rejected"][:1797] == one.answers["rejected"]
    for image in (0, 5, 1796):  # pair j * 1797 + image: the image's j-th wrong digit, all nine distinct
        pairs = range(image, len(nine), 1797)
        wrong = {nine.answers["rejected"][g] for g in pairs}
        assert {nine.answers["chosen"][g] for g in pairs} == {one.answers["chosen"][image]}
        assert len(wrong) == 9 and one.answers["chosen"][image] not in wrong
        assert all(torch.equal(nine.images.load_image(g), one.images.load_image(image)) for g in pairs)
    train, val = split_preferences(DigitsPreferences(rejected=9), 16)
    _, val_one = split_preferences(DigitsPreferences(), 16)
    assert len(train) == 9 * 1437 and len(val) == 9 * 360
    groups = {val.image_group(i) for i in range(len(val))}  # every pair of an image on one side
    assert groups == set(val_one.images.indices.tolist())
    assert not groups & {train.image_group(i) for i in range(len(train))}
    assert [val.turns(i) for i in range(360)] == [val_one.turns(i) for i in range(360)]
    with pytest.raises(ValueError):
        DigitsPreferences(rejected=10)


def test_collated_batch_holds_chosen_then_rejected_rows_with_answer_labels() -> None:
    train, _ = split_preferences(DigitsPreferences(), 16)
    tokenizer = build_tokenizer("word", [*template_texts(), *train.texts()])
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    samples = PreferenceSamples(train, tokenizer, 16, image_id, 24)
    batch = collate_preferences([samples[(0, 0, i)] for i in range(3)], int(tokenizer.pad_token_id))
    assert batch["input_ids"].shape[0] == 6 and batch["pixel_values"].shape == (6, 3, 16, 16)
    assert batch["index"].tolist() == [0, 1, 2]
    for row in range(3):
        answers = [
            tokenizer.decode(batch["input_ids"][r][batch["labels"][r] != IGNORE_INDEX])
            for r in (row, row + 3)
        ]
        pair = (
            train.answers["chosen"][train.global_index(row)],
            train.answers["rejected"][train.global_index(row)],
        )
        assert answers == [f"{pair[0]} </s>", f"{pair[1]} </s>"]  # the same prompt, then each answer


# ---------------------------------------------------------------------------------------- recipe
def test_align_recipes_are_recognised_and_lora_needs_adapters() -> None:
    assert recipe_verb({"name": "x", "from_run": "runs/x"}) == "align"
    full = load_recipe("align", DPO_TINY, ["trainable=projector+llm", "lora=null"])  # no adapters needed
    assert full.lora is None and full.trainable == "projector+llm"
    with pytest.raises(UserError, match="set lora"):
        load_recipe("align", DPO_TINY, ["lora=null"])
    with pytest.raises(UserError, match="exactly one of max_steps or epochs"):
        load_recipe("align", DPO_TINY, ["epochs=1"])
