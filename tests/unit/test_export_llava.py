"""Export of LLaVA runs to transformers on hand-made run folders (random weights, no training): the chat
templates give vlmforge's token ids, the image processor vlmforge's pixels, the linear projector exports
exactly, run folders' config.json, and the errors of runs that cannot be exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch

from vlmforge.config.load import dump_recipe, load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import (
    BUILT_IMAGE_ID,
    IMAGE,
    QUESTIONS,
    build_tokenizer,
    encode,
    prompt_ids,
    template_texts,
)
from vlmforge.data.digits import CLASSNAMES
from vlmforge.errors import UserError
from vlmforge.storage import WEIGHTS, write_json, write_text

transformers = pytest.importorskip("transformers")

TINY = find_recipe("debug/llava-tiny")
IMAGE_TOKENS = 16  # 16 px / patch 4, squared
TEXTS = [*template_texts(), *QUESTIONS, *CLASSNAMES, "Describe the image.", "a handwritten"]


def _recipe(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", TINY, list(overrides)))


def _fake_run(root: Path, *overrides: str, finished: int = 2) -> Path:
    """A finetune run folder as `vlmforge finetune` leaves it, with random weights in its first
    ``finished`` stages."""
    from vlmforge.models.llava import build_model, save_weights, vocab_size_for

    recipe = _recipe(*overrides)
    run = root / "run"
    run.mkdir(parents=True)
    write_text(run / "recipe.yaml", dump_recipe(recipe))
    tokenizer = build_tokenizer("word", TEXTS)
    tokenizer.save_pretrained(str(run / "tokenizer"))
    torch.manual_seed(0)
    model = build_model(recipe.model, vocab_size_for(recipe.model, tokenizer), image_id=BUILT_IMAGE_ID)
    for stage in recipe.stages[:finished]:
        (run / "stages" / stage.name).mkdir(parents=True)
        save_weights(model, run / "stages" / stage.name / WEIGHTS)
        write_json(run / "stages" / stage.name / "result.json", {"status": "completed"})
    return run


def _export(run: Path, out: Path, stage: str | None = None, dtype: torch.dtype = torch.float32) -> Path:
    from vlmforge.interop.hf_llava import export

    out.mkdir()
    export(run, out, stage, dtype)
    return out


def _processor(kind: str, template: str) -> Any:
    from vlmforge.interop.hf_llava import ExportSource, processor

    tokenizer = build_tokenizer(kind, TEXTS, vocab_size=300)
    cfg = _recipe().model
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return processor(ExportSource(cfg, Path("-"), Path("-"), template, mean, std, 4), tokenizer)


def _image() -> Any:
    from PIL import Image

    return Image.new("RGB", (24, 16), (10, 200, 30))


# -------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_built_tokenizers_put_image_where_the_model_config_says(kind: str) -> None:
    from vlmforge.models.llava import build_model, hf_config

    tokenizer = build_tokenizer(kind, TEXTS, vocab_size=300)
    assert tokenizer.convert_tokens_to_ids(IMAGE) == BUILT_IMAGE_ID
    assert hf_config(_recipe().model, len(tokenizer), BUILT_IMAGE_ID).image_token_index == BUILT_IMAGE_ID
    assert build_model(_recipe().model, len(tokenizer), "meta").config.image_token_index == BUILT_IMAGE_ID


@pytest.mark.parametrize("kind", ["word", "bpe"])
@pytest.mark.parametrize(
    "question", [f"{IMAGE}\nWhat digit is this?", "Which number is written here?", f"Is it a seven?\n{IMAGE}"]
)
def test_chat_template_prompt_is_vlmforges(kind: str, question: str) -> None:
    processor = _processor(kind, "chat")
    content: list[dict[str, str]] = []
    for k, part in enumerate(question.split(f"{IMAGE}")):
        if k:
            content.append({"type": "image"})
        if part.strip():
            content.append({"type": "text", "text": part.strip()})
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"images": [_image()] if IMAGE in question else None},
    )
    expected = prompt_ids(processor.tokenizer, question, "chat", IMAGE_TOKENS, BUILT_IMAGE_ID)
    assert inputs["input_ids"][0] == expected


@pytest.mark.parametrize("kind", ["word", "bpe"])
@pytest.mark.parametrize("template", ["chat", "plain"])
def test_chat_template_conversation_is_vlmforges_encoding(kind: str, template: str) -> None:
    processor = _processor(kind, template)
    turns = [
        ("human", f"{IMAGE}\nWhat digit is this?"),
        ("gpt", "a handwritten seven"),
        ("human", "Which number is written here?"),
        ("gpt", "seven"),
    ]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a handwritten seven"}]},
        {"role": "user", "content": "Which number is written here?"},
        {"role": "assistant", "content": "seven"},
    ]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, processor_kwargs={"images": [_image()]}
    )
    ids, _ = encode(processor.tokenizer, turns, template, IMAGE_TOKENS, BUILT_IMAGE_ID, 1000)
    assert inputs["input_ids"][0] == ids


def test_plain_template_prompt_is_the_image_alone() -> None:
    processor = _processor("word", "plain")
    question = f"{IMAGE}\nDescribe the image."
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, processor_kwargs={"images": [_image()]}
    )
    assert inputs[0] == prompt_ids(processor.tokenizer, question, "plain", IMAGE_TOKENS, BUILT_IMAGE_ID)


def test_chat_template_refuses_a_system_prompt() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(Exception, match="without a system prompt"):
        _processor("word", "chat").apply_chat_template(messages, add_generation_prompt=True)


def test_image_processor_gives_vlmforges_pixels_for_an_image_file(tmp_path: Path) -> None:
    from vlmforge.data.folder import load_rgb

    # a smooth image with a whole-number resize (48 x 32 -> 24 x 16): transformers truncates the resized
    # long side where vlmforge rounds it, so other aspect ratios may be one pixel apart before the crop
    grid = torch.stack(torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij"))
    pixels = torch.stack([grid[1] / 48, grid[0] / 32, (grid[0] + grid[1]) / 80], -1)
    from PIL import Image

    Image.fromarray((pixels * 255).to(torch.uint8).numpy()).save(tmp_path / "a.png")
    half = torch.full((3, 1, 1), 0.5)
    expected = load_rgb(tmp_path / "a.png", 16, half, half)
    with Image.open(tmp_path / "a.png") as img:
        got = _processor("word", "chat").image_processor(img, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(got, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------- export
def test_linear_projector_exports_exactly(tmp_path: Path) -> None:
    from vlmforge.data.conversations import load_tokenizer
    from vlmforge.runs.artifacts import llava_model

    run = _fake_run(tmp_path, "model.projector=linear")
    out = _export(run, tmp_path / "out")
    model = transformers.LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert model.config.projector_hidden_act == "linear"
    ours = llava_model(
        _recipe("model.projector=linear").model,
        load_tokenizer(run / "tokenizer"),
        run / "stages" / "instruct" / WEIGHTS,
    )
    ids = torch.tensor([[1, *[BUILT_IMAGE_ID] * IMAGE_TOKENS, 7, 8, 9]])
    pixels = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids, pixel_values=pixels).logits, ours(input_ids=ids, pixel_values=pixels).logits
        )


def test_run_config_loads_its_weights_or_fails_loudly(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from vlmforge.models.llava import UNLOADABLE_LINEAR, build_model, save_weights, write_run_config

    for projector in ("mlp2x_gelu", "linear"):
        cfg = _recipe(f"model.projector={projector}").model
        folder = tmp_path / projector
        write_run_config(folder, cfg, 40, BUILT_IMAGE_ID)
        save_weights(build_model(cfg, 40, image_id=BUILT_IMAGE_ID), folder / WEIGHTS)
        if projector == "linear":  # one `linear` layer, not transformers' projector: no silent random init
            with pytest.raises(KeyError, match=UNLOADABLE_LINEAR):
                transformers.LlavaForConditionalGeneration.from_pretrained(folder)
            continue
        model = transformers.LlavaForConditionalGeneration.from_pretrained(folder)
        saved = load_file(folder / WEIGHTS)
        assert model.config.image_token_index == BUILT_IMAGE_ID
        assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())


def test_export_refuses_what_it_cannot_export(tmp_path: Path) -> None:
    unfinished = _fake_run(tmp_path / "a", finished=0)
    with pytest.raises(UserError, match="no finetune stage has finished"):
        _export(unfinished, tmp_path / "out-a")
    run = _fake_run(tmp_path / "b", finished=1)
    with pytest.raises(UserError, match="'instruct' has not finished"):
        _export(run, tmp_path / "out-b", stage="instruct")
    with pytest.raises(UserError, match="dtype"):
        _export(run, tmp_path / "out-c", dtype=torch.int8)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    from vlmforge.interop.hf_llava import export

    with pytest.raises(UserError, match="empty folder"):
        export(run, tmp_path / "full", None, torch.float32)
    pretrain = tmp_path / "clip"
    pretrain.mkdir()
    write_text(pretrain / "recipe.yaml", dump_recipe(load_recipe("pretrain", find_recipe("debug/clip-tiny"))))
    with pytest.raises(UserError, match="pretrain run"):
        _export(pretrain, tmp_path / "out-d")


def test_export_of_the_default_stage_takes_the_last_finished_one(tmp_path: Path) -> None:
    from vlmforge.interop.hf_llava import export_source

    run = _fake_run(tmp_path, finished=1)
    source = export_source(run, None)
    assert source.weights == run / "stages" / "align" / WEIGHTS and source.template == "plain"
