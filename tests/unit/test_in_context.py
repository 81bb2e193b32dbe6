"""In-context samples for LLaVA: the JSON reader and its errors, the digits generator, multi-image
encoding and collation (image-token positions, varying image counts, loss masks), LLaVA's forward on a
batch of varying image counts, k-shot prompts, the planner's image count and the recipe checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from vlmforge.config.data import DigitsInContext, InContextJsonData
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import IGNORE_INDEX, IMAGE, build_tokenizer, encode, template_texts
from vlmforge.data.in_context import (
    NONCE_NAMES,
    InContextSamples,
    collate_in_context,
    digits_in_context,
    few_shot_prompt,
    in_context_json,
    query_only,
    split_stage_data,
)
from vlmforge.errors import UserError

pytest.importorskip("transformers")

TINY = find_recipe("debug/llava-icl-tiny")
SIDE, IMAGE_TOKENS = 16, 16  # the tiny recipe: 16 px images, 4 px patches


def _recipe(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", TINY, list(overrides)))


@pytest.fixture(scope="module")
def digits() -> Any:
    return digits_in_context(DigitsInContext(shots=3, count=100), SIDE)


@pytest.fixture(scope="module")
def tokenizer(digits: Any) -> Any:
    texts = [*template_texts(), *digits[0].texts(), *NONCE_NAMES]
    return build_tokenizer("word", texts)


def _image_id(tokenizer: Any) -> int:
    return int(tokenizer.convert_tokens_to_ids(IMAGE))


def _samples(data: Any, tokenizer: Any, max_text: int = 64) -> InContextSamples:
    return InContextSamples(data, tokenizer, "chat", IMAGE_TOKENS, _image_id(tokenizer), max_text)


def _write_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    for k, name in enumerate(names):
        Image.new("RGB", (8, 8), (30 * k, 60, 90)).save(folder / name)


def _icl_json(folder: Path, entries: list[Any]) -> Path:
    path = folder / "icl.json"
    path.write_text(json.dumps(entries))
    return path


GOOD = [
    {
        "id": "a",
        "images": ["0.png", "1.png", "2.png"],
        "context": [
            {"instruction": "What is this?", "answer": "a cat"},
            {"instruction": f"Look: {IMAGE} what now?", "answer": "a dog"},
        ],
        "query": {"instruction": "And this?", "answer": "a bird"},
    },
    {"id": "b", "images": ["2.png"], "query": {"instruction": "What is this?", "answer": "a bird"}},
]


# ------------------------------------------------------------------------------------------ JSON
def test_json_reader_builds_one_chat_turn_pair_per_image(tmp_path: Path) -> None:
    _write_images(tmp_path, ["0.png", "1.png", "2.png"])
    data = in_context_json(InContextJsonData(path=_icl_json(tmp_path, GOOD)), SIDE)
    turns = data.turns(0)
    assert [role for role, _ in turns] == ["human", "gpt"] * 3
    assert turns[0][1] == f"{IMAGE}\nWhat is this?"  # <image> added before an instruction without one
    assert turns[2][1] == f"Look: {IMAGE} what now?"  # kept where the instruction puts it
    assert [turns[k][1] for k in (1, 3, 5)] == ["a cat", "a dog", "a bird"]
    assert data.image(0).shape == (3, 3, SIDE, SIDE) and data.image(1).shape == (1, 3, SIDE, SIDE)
    assert torch.equal(data.image(0)[2], data.image(1)[0])  # the same file, in the listed order
    assert not torch.equal(data.image(0)[0], data.image(0)[1])
    assert data.context_size(0) == 2 and data.context_size(1) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": ["0.png"]}, "entry 0: 1 images for 2 context examples and the query"),
        ({"images": "0.png"}, "entry 0: 'images' must be a list"),
        ({"context": [{"instruction": "x"}, {"instruction": "y", "answer": "z"}]}, "'context\\[0\\]' needs"),
        ({"query": {"answer": "a bird"}}, "entry 0: 'query' needs an 'instruction'"),
        ({"query": {"instruction": f"{IMAGE}{IMAGE}", "answer": "b"}}, "at most once"),
        ({"context": "none"}, "'context' must be a list"),
    ],
)
def test_json_errors_name_the_file_entry_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    _write_images(tmp_path, ["0.png", "1.png", "2.png"])
    path = _icl_json(tmp_path, [{**GOOD[0], **change}])
    with pytest.raises(UserError, match=message) as caught:
        in_context_json(InContextJsonData(path=path), SIDE)
    assert str(path) in caught.value.message


def test_json_missing_images_and_bad_files_are_user_errors(tmp_path: Path) -> None:
    _write_images(tmp_path, ["0.png"])
    with pytest.raises(UserError, match="2 image file\\(s\\) listed but missing"):
        in_context_json(InContextJsonData(path=_icl_json(tmp_path, GOOD)), SIDE)
    with pytest.raises(UserError, match="not found"):
        in_context_json(InContextJsonData(path=tmp_path / "absent.json"), SIDE)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(UserError, match=r"broken\.json: not valid JSON"):
        in_context_json(InContextJsonData(path=tmp_path / "broken.json"), SIDE)


# ---------------------------------------------------------------------------------------- digits
def test_digits_split_images_before_samples(digits: Any) -> None:
    train, held_out = digits
    assert len(train) == 80 and len(held_out) == 20
    assert {train.context_size(i) for i in range(len(train))} == {0, 1, 2, 3}  # 0 to shots examples
    assert {held_out.context_size(i) for i in range(len(held_out))} == {3}  # all shots, k-shot keeps k
    for i in range(len(held_out)):
        turns = held_out.turns(i)
        assert all(turn == ("human", f"{IMAGE}\nWhat is this?") for turn in turns[0::2])
        assert held_out.image(i).shape == (4, 3, SIDE, SIDE)
    # no held-out digit is ever seen in training: compare the pixels of every image used
    seen = {
        train.image(i)[k].numpy().tobytes() for i in range(len(train)) for k in range(len(train.image(i)))
    }
    held = {held_out.image(i)[k].numpy().tobytes() for i in range(len(held_out)) for k in range(4)}
    assert not seen & held


def test_nonce_names_are_bound_only_by_the_context() -> None:
    _, held_out = digits_in_context(DigitsInContext(shots=2, count=60, names="nonce"), SIDE)
    for i in range(len(held_out)):
        answers = [text for _, text in held_out.turns(i)[1::2]]
        assert set(answers) <= set(NONCE_NAMES)
        assert len(set(answers[:2])) == 2  # two classes, two names, both shown
        assert answers[-1] in answers[:2]  # the query's name is in its context


# --------------------------------------------------------------------------------- encode, collate
def test_image_placeholders_follow_each_user_turn(digits: Any, tokenizer: Any) -> None:
    held_out = digits[1]
    ids, _ = _samples(held_out, tokenizer).encoded(0)
    image_id = _image_id(tokenizer)
    positions = np.flatnonzero(np.asarray(ids) == image_id)
    assert len(positions) == 4 * IMAGE_TOKENS
    runs = np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1)
    assert [len(run) for run in runs] == [IMAGE_TOKENS] * 4  # one contiguous block per <image>
    user = tokenizer("USER:", add_special_tokens=False)["input_ids"]
    for run in runs:  # each block right after "USER:", as the chat template writes the instruction
        assert ids[run[0] - len(user) : run[0]] == user


def test_query_only_loss_keeps_the_last_answer(digits: Any, tokenizer: Any) -> None:
    held_out = digits[1]
    ids, labels = _samples(held_out, tokenizer).encoded(0)
    supervised = [i for i, y in enumerate(labels) if y != IGNORE_INDEX]
    answer = tokenizer(" " + held_out.turns(0)[-1][1], add_special_tokens=False)["input_ids"]
    assert [ids[i] for i in supervised] == [*answer, tokenizer.eos_token_id]
    assert supervised[-1] == len(ids) - 1  # the query's answer ends the sample

    every = held_out.subset(np.arange(len(held_out)), "all")
    every.answer_loss = "all"
    _, all_labels = _samples(every, tokenizer).encoded(0)
    _, reference = encode(tokenizer, held_out.turns(0), "chat", IMAGE_TOKENS, _image_id(tokenizer), 64)
    assert all_labels == reference  # every answer supervised, as a multi-turn chat
    starts = [
        i
        for i in range(len(all_labels))
        if all_labels[i] != IGNORE_INDEX and all_labels[i - 1] == IGNORE_INDEX
    ]
    assert len(starts) == 4


def test_query_only_on_hand_made_labels() -> None:
    x = IGNORE_INDEX
    assert query_only([x, 5, 2, x, x, 7, 2, x, 9, 9, 2]) == [x, x, x, x, x, x, x, x, 9, 9, 2]
    assert query_only([x, x]) == [x, x]
    assert query_only([4, 2]) == [4, 2]


def test_collate_stacks_every_image_in_sample_order(tmp_path: Path, tokenizer: Any) -> None:
    _write_images(tmp_path, ["0.png", "1.png", "2.png"])
    data = in_context_json(InContextJsonData(path=_icl_json(tmp_path, GOOD)), SIDE)
    samples = _samples(data, tokenizer)
    batch = collate_in_context([samples[(0, 0, 1)], samples[(0, 0, 0)]], int(tokenizer.pad_token_id))
    assert batch["pixel_values"].shape == (4, 3, SIDE, SIDE)
    assert torch.equal(batch["pixel_values"][0], data.image(1)[0])  # row 0: sample 1's single image
    assert torch.equal(batch["pixel_values"][1:], data.image(0))  # then sample 0's three, in order
    per_row = (batch["input_ids"] == _image_id(tokenizer)).sum(1)
    assert per_row.tolist() == [IMAGE_TOKENS, 3 * IMAGE_TOKENS]
    assert batch["images_per_sample"].tolist() == [1, 3]
    pad = batch["input_ids"][0] == tokenizer.pad_token_id
    assert pad.any() and (batch["labels"][0][pad] == IGNORE_INDEX).all()


def test_llava_forward_matches_per_sample_on_varying_image_counts(digits: Any, tokenizer: Any) -> None:
    """The batched forward of samples with 1 and 4 images gives each row the logits it gets alone: the
    stacked pixel_values are scattered into the right sample's placeholders."""
    from vlmforge.models.llava import build_model

    torch.manual_seed(0)
    cfg = _recipe().model
    model = build_model(cfg, len(tokenizer), image_id=_image_id(tokenizer)).eval()
    train, held_out = digits
    samples = [_samples(train, tokenizer), _samples(held_out, tokenizer)]
    short = next(i for i in range(len(train)) if train.context_size(i) == 0)
    items = [samples[0][(0, 0, short)], samples[1][(0, 0, 0)]]
    pad = int(tokenizer.pad_token_id)
    batch = collate_in_context(items, pad)
    with torch.no_grad():
        both = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
        for row, item in enumerate(items):
            alone = collate_in_context([item], pad)
            logits = model(**{k: alone[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
            n = len(item["input_ids"])
            assert torch.allclose(both[row, :n], logits[0], atol=1e-4)
        swapped = batch["pixel_values"].clone()
        swapped[[1, 2]] = swapped[[2, 1]]  # two of the second sample's images exchanged
        moved = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=swapped
        )
    assert torch.allclose(moved.logits[0], both[0], atol=1e-5)
    assert not torch.allclose(moved.logits[1], both[1], atol=1e-3)


def test_few_shot_prompt_is_the_training_prefix(digits: Any, tokenizer: Any) -> None:
    held_out = digits[1]
    turns, image_id = held_out.turns(0), _image_id(tokenizer)
    ids, labels = encode(tokenizer, turns, "chat", IMAGE_TOKENS, image_id, 1 << 20)
    answer_start = max(
        i for i in range(len(labels)) if labels[i - 1] == IGNORE_INDEX and labels[i] != IGNORE_INDEX
    )
    assert few_shot_prompt(tokenizer, turns, 3, IMAGE_TOKENS, image_id) == ids[:answer_start]
    for shots in (0, 1, 2):
        prompt = few_shot_prompt(tokenizer, turns, shots, IMAGE_TOKENS, image_id)
        assert prompt.count(image_id) == (shots + 1) * IMAGE_TOKENS
        kept, _ = encode(tokenizer, turns[-2 * (shots + 1) :], "chat", IMAGE_TOKENS, image_id, 1 << 20)
        assert prompt == kept[: len(prompt)]  # the last k examples, then the query's prompt


# ----------------------------------------------------------------------------------- recipe, plan
def test_stage_data_splits_in_context_sources() -> None:
    train, held_out = split_stage_data(_recipe("stages.0.data.count=50").stages[0].data, SIDE)
    assert (len(train), len(held_out)) == (40, 10) and held_out.context_size(0) == 4


def test_recipe_refuses_samples_longer_than_the_positions() -> None:
    with pytest.raises(UserError, match="5 images x 16 tokens \\+ max_text_tokens 64 exceed"):
        _recipe("model.llm.max_position_embeddings=120")
    with pytest.raises(UserError, match="in-context samples need template: chat"):
        _recipe("stages.0.template=plain")
    with pytest.raises(UserError, match="in_context"):
        load_recipe("finetune", find_recipe("debug/llava-tiny"), ["eval=[{kind: in_context}]"])


def test_planner_counts_every_image_of_a_sample() -> None:
    from vlmforge.planning.phases import recipe_model_costs

    four = recipe_model_costs(_recipe())[0].flops_per_sample
    one = recipe_model_costs(_recipe("stages.0.data.shots=1"))[0].flops_per_sample
    vision_and_llm_tokens = (5 * IMAGE_TOKENS + 64) / (2 * IMAGE_TOKENS + 64)
    assert four / one == pytest.approx(vision_and_llm_tokens, rel=0.25)
    assert four > 1.3 * one
