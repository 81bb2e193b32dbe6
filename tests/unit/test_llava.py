"""LLaVA family: conversation data and answer-only labels, freezing per stage, LoRA, pretrained towers,
the 7B recipe on the planner, and `vlmforge finetune` + `vlmforge eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe, LlavaJsonData
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import (
    IGNORE_INDEX,
    IMAGE,
    build_tokenizer,
    collate_conversations,
    encode,
    llava_json,
    split_conversations,
    template_texts,
)
from vlmforge.errors import UserError

pytest.importorskip("transformers")
pytest.importorskip("peft")

TINY = find_recipe("debug/llava-tiny")
IMAGE_TOKENS = 16  # 16 px / patch 4, squared


def _recipe(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", TINY, list(overrides)))


@pytest.fixture(scope="module")
def vqa_data() -> Any:
    return split_conversations(_recipe().stages[1].data, 16)[0]


@pytest.fixture(scope="module")
def tokenizer(vqa_data: Any) -> Any:
    captions = split_conversations(_recipe().stages[0].data, 16)[0]
    return build_tokenizer("word", [*template_texts(), *vqa_data.texts(), *captions.texts()])


def _image_id(tokenizer: Any) -> int:
    return int(tokenizer.convert_tokens_to_ids(IMAGE))


# ------------------------------------------------------------------------------------------ data
def test_chat_labels_cover_only_the_answers(tokenizer: Any) -> None:
    turns = [
        ("human", f"{IMAGE}\nWhat digit is this?"),
        ("gpt", "seven"),
        ("human", "Which number is written here?"),
        ("gpt", "a handwritten seven"),
    ]
    ids, labels = encode(tokenizer, turns, "chat", IMAGE_TOKENS, _image_id(tokenizer), 64)
    assert len(ids) == len(labels)
    assert ids.count(_image_id(tokenizer)) == IMAGE_TOKENS
    scored = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in scored)
    # exactly the two answers and their end tokens carry loss; the questions, roles and image do not
    assert tokenizer.decode([ids[i] for i in scored]) == "seven </s> a handwritten seven </s>"
    assert ids[scored[0] - 1] == tokenizer.convert_tokens_to_ids(":")  # right after "ASSISTANT:"


def test_plain_template_is_image_then_caption(tokenizer: Any) -> None:
    turns = [("human", f"{IMAGE}\nDescribe the image."), ("gpt", "a handwritten two")]
    ids, labels = encode(tokenizer, turns, "plain", IMAGE_TOKENS, _image_id(tokenizer), 64)
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1 : 1 + IMAGE_TOKENS] == [_image_id(tokenizer)] * IMAGE_TOKENS
    assert tokenizer.decode(ids[1 + IMAGE_TOKENS :]) == "a handwritten two </s>"
    assert labels[: 1 + IMAGE_TOKENS] == [IGNORE_INDEX] * (1 + IMAGE_TOKENS)
    assert labels[1 + IMAGE_TOKENS :] == ids[1 + IMAGE_TOKENS :]


def test_truncation_keeps_every_image_placeholder(tokenizer: Any) -> None:
    turns = [("human", f"{IMAGE}\nWhat digit is this?"), ("gpt", "a handwritten seven " * 10)]
    ids, labels = encode(tokenizer, turns, "chat", IMAGE_TOKENS, _image_id(tokenizer), 8)
    assert ids.count(_image_id(tokenizer)) == IMAGE_TOKENS
    assert len(ids) == IMAGE_TOKENS + 8 and len(labels) == len(ids)


def test_collate_pads_ids_masks_labels_and_stacks_present_images() -> None:
    image = torch.ones(3, 16, 16)
    items = [
        {
            "input_ids": [1, 5, 6],
            "labels": [-100, 5, 6],
            "image": image,
            "index": 3,
            "epoch": 0,
            "position": 2,
        },
        {"input_ids": [1, 7], "labels": [-100, 7], "image": None, "index": 9, "epoch": 0, "position": 2},
    ]
    batch = collate_conversations(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["pixel_values"].shape == (1, 3, 16, 16)  # only the sample that has an image


def _write_llava_json(root: Path, entries: list[dict[str, Any]]) -> Path:
    from PIL import Image

    Image.new("RGB", (20, 24), (200, 10, 10)).save(root / "a.png")
    path = root / "chat.json"
    path.write_text(json.dumps(entries))
    return path


def test_llava_json_reads_conversations_and_images(tmp_path: Path) -> None:
    path = _write_llava_json(
        tmp_path,
        [
            {
                "id": "x",
                "image": "a.png",
                "conversations": [
                    {"from": "human", "value": "What colour?"},
                    {"from": "gpt", "value": "red"},
                ],
            },
            {
                "id": "y",
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
            },
        ],
    )
    data = llava_json(LlavaJsonData(path=path), 16)
    assert len(data) == 2
    assert data.turns(0)[0] == ("human", f"{IMAGE}\nWhat colour?")  # LLaVA puts the image first
    image = data.image(0)
    assert image is not None and image.shape == (3, 16, 16)
    assert data.image(1) is None  # text-only conversations are allowed


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "?"}], "turn 0 must be"),
        ([{"from": "human", "value": "q"}], "question-answer pairs"),
        ([{"from": "human", "value": "q"}, {"from": "gpt", "value": f"{IMAGE} a"}], "first human turn"),
    ],
)
def test_llava_json_errors_name_the_entry(tmp_path: Path, conversations: list[Any], message: str) -> None:
    path = _write_llava_json(tmp_path, [{"id": "z", "image": "a.png", "conversations": conversations}])
    with pytest.raises(UserError, match=message) as info:
        llava_json(LlavaJsonData(path=path), 16)
    assert "entry 0" in info.value.message


def test_llava_json_missing_image_is_reported(tmp_path: Path) -> None:
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    path = _write_llava_json(tmp_path, [{"id": "z", "image": "gone.png", "conversations": turns}])
    with pytest.raises(UserError, match=r"gone\.png"):
        llava_json(LlavaJsonData(path=path), 16)


# ------------------------------------------------------------------------------------ recipes
def test_lora_stage_needs_model_lora() -> None:
    with pytest.raises(UserError, match=r"set model\.lora"):
        _recipe("stages.1.trainable=lora")


def test_stage_needs_steps_or_epochs() -> None:
    with pytest.raises(UserError, match="exactly one of max_steps or epochs"):
        load_recipe(
            "finetune",
            None,
            base={
                "name": "x",
                "model": {"kind": "llava"},
                "stages": [{"name": "a", "trainable": "projector", "data": {"kind": "digits-conversations"}}],
            },
        )


# ------------------------------------------------------------------------------------ training
def _stage_module(recipe: FinetuneRecipe, index: int, tokenizer: Any, data: Any) -> Any:
    from vlmforge.config.schema import BatchPlan
    from vlmforge.data.conversations import ConversationSamples
    from vlmforge.training.llava import LlavaStageModule
    from vlmforge.training.module import FitSettings

    stage = recipe.stages[index]
    settings = FitSettings(BatchPlan(8, 8, 1, 3), recipe.stage_optim(stage), 0)
    tokens = (_image_id(tokenizer), int(tokenizer.pad_token_id))
    torch.manual_seed(0)
    module = LlavaStageModule(recipe, len(tokenizer), stage, settings, tokens)
    module.train_data = ConversationSamples(data, tokenizer, stage.template, IMAGE_TOKENS, tokens[0], 24)
    return module


def _train_steps(module: Any, steps: int = 3) -> None:
    """Plain optimizer steps through the module's own loss and optimizer (what the Trainer runs)."""
    optimizer = module.configure_optimizers()["optimizer"]
    samples = module.train_data
    for step in range(steps):
        batch = module.collate([samples[(0, step, i)] for i in range(step * 8, step * 8 + 8)])
        optimizer.zero_grad()
        module.loss_terms(batch)["loss"].backward()
        optimizer.step()


def _snapshot(module: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: Any) -> set[str]:
    return {name for name, p in module.model.named_parameters() if not torch.equal(before[name], p.detach())}


def test_projector_stage_leaves_vision_and_llm_unchanged(tokenizer: Any, vqa_data: Any) -> None:
    module = _stage_module(_recipe(), 0, tokenizer, vqa_data)
    before = _snapshot(module)
    _train_steps(module)
    changed = _changed(before, module)
    projector = {name for name in before if name.startswith("model.multi_modal_projector.")}
    assert changed == projector and projector  # vision encoder, LLM and LM head bit-identical


def test_projector_llm_stage_trains_llm_but_not_vision(tokenizer: Any, vqa_data: Any) -> None:
    module = _stage_module(_recipe(), 1, tokenizer, vqa_data)
    before = _snapshot(module)
    _train_steps(module)
    changed = _changed(before, module)
    assert any(name.startswith("model.language_model.") for name in changed)
    assert not any(name.startswith("model.vision_tower.") for name in changed)


def test_lora_stage_trains_only_adapters_and_merges(tokenizer: Any, vqa_data: Any) -> None:
    from vlmforge.models.llava import plain_model

    recipe = _recipe("model.lora.rank=4", "stages.1.trainable=lora")
    module = _stage_module(recipe, 1, tokenizer, vqa_data)
    trainable = {name for name, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any("q_proj" in name for name in trainable) and not any("vision" in name for name in trainable)
    before = _snapshot(module)
    _train_steps(module)
    assert _changed(before, module) == trainable
    base_q = before[next(n for n in before if n.endswith("layers.0.self_attn.q_proj.base_layer.weight"))]
    merged = plain_model(module.model)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    q = merged.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q, base_q)  # the trained adapter was folded into the weight


def test_pretrained_towers_are_loaded_and_the_vocabulary_grows(tmp_path: Path) -> None:
    import transformers

    from vlmforge.models.llava import build_model

    cfg = _recipe().model
    vision = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=4,
            image_size=16,
            hidden_act="quick_gelu",
        )
    )
    llm = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            vocab_size=40,
            max_position_embeddings=64,
        )
    )
    vision.save_pretrained(tmp_path / "clip")
    llm.save_pretrained(tmp_path / "llama")
    cfg = cfg.model_copy(
        update={
            "vision": cfg.vision.model_copy(update={"pretrained": str(tmp_path / "clip")}),
            "llm": cfg.llm.model_copy(update={"pretrained": str(tmp_path / "llama")}),
        }
    )
    model = build_model(cfg, 42)
    pos = model.model.vision_tower.embeddings.position_embedding.weight
    assert torch.equal(pos, vision.embeddings.position_embedding.weight)
    embed = model.model.language_model.embed_tokens.weight
    assert torch.equal(embed[:40], llm.model.embed_tokens.weight)
    assert torch.allclose(embed[40], llm.model.embed_tokens.weight.mean(0))  # new rows start at the mean
    assert torch.equal(model.lm_head.weight[:40], llm.lm_head.weight)

    wrong = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"hidden_size": 32, "heads": 2})})
    with pytest.raises(UserError, match=r"model\.llm\.pretrained"):
        build_model(wrong, 42)


# ------------------------------------------------------------------------------------- planning
@pytest.mark.slow
def test_planner_counts_llava_1_5_7b_per_stage() -> None:
    from vlmforge.verbs import plan

    recipe = load_recipe("finetune", find_recipe("llava/llava-1.5-7b"))
    result = plan.run(recipe, ["a100-80gb"], [8])
    align, instruct = result.stages
    total_params = align.trainable_params + align.frozen_params
    assert total_params == pytest.approx(7.06e9, rel=0.03)  # LLaVA-1.5-7B: 7.06B parameters
    assert align.trainable_params == pytest.approx(21.0e6, rel=0.01)  # mlp2x_gelu: 1024x4096 + 4096x4096
    assert instruct.frozen_params == pytest.approx(0.3035e9, rel=0.01)  # the frozen ViT-L/14-336
    # samples: one epoch of full batches of each data set
    assert align.samples == 558128 // 256 * 256 and instruct.samples == 665298 // 128 * 128
    assert align.flops_per_sample < instruct.flops_per_sample and align.total_flops < instruct.total_flops
    # a frozen LLM costs a forward and the activation gradients, about 4·N·T; training it 6·N·T
    llm = 6.61e9
    assert align.flops_per_sample == pytest.approx(4 * llm * (576 + 64), rel=0.1)
    assert instruct.flops_per_sample == pytest.approx(6 * llm * (576 + 512), rel=0.1)
    assert result.family == "llava" and result.rows[0].fits and len(result.rows[0].stages) == 2


def test_planner_lora_stage_has_few_trainable_parameters() -> None:
    from vlmforge.planning.phases import recipe_model_costs

    full = recipe_model_costs(_recipe("model.llm.vocab_size=64"))[1]
    lora = recipe_model_costs(
        _recipe("model.llm.vocab_size=64", "model.lora.rank=2", "stages.1.trainable=lora")
    )[1]
    assert lora.trainable_params < 0.1 * full.trainable_params
    assert lora.flops_per_sample < full.flops_per_sample  # no weight gradients for the frozen LLM
