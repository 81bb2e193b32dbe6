"""Reading transformers folders for predict and eval --model, without training: a LLaVA processor's chat
template gives vlmforge's prompt ids, image processors are taken or refused by what vlmforge's square
transform reproduces, a folder tokenizer pads as CLIP and SigLIP read it, and unknown model types are
refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import (
    BUILT_IMAGE_ID,
    IMAGE,
    QUESTIONS,
    build_tokenizer,
    prompt_ids,
    template_texts,
)
from vlmforge.data.digits import CLASSNAMES
from vlmforge.errors import UserError

transformers = pytest.importorskip("transformers")

TINY = find_recipe("debug/llava-tiny")
IMAGE_TOKENS = 16  # 16 px / patch 4, squared
TEXTS = [*template_texts(), *QUESTIONS, *CLASSNAMES, "Describe the image.", "a handwritten"]
ASKED = [
    *(f"{IMAGE}\n{q}" for q in QUESTIONS),  # as vqa and predict ask
    f"{IMAGE}\nDescribe the image.",
    "What digit is this?",  # a conversation without an image
    f"{IMAGE}",
]


def _saved_processor(folder: Path, kind: str, template: str) -> tuple[Any, Any]:
    """(the tokenizer, the processor as AutoProcessor reads it back) of a vlmforge LLaVA export."""
    from vlmforge.interop.hf_llava import ExportSource, processor

    recipe = cast(FinetuneRecipe, load_recipe("finetune", TINY))
    tokenizer = build_tokenizer(kind, TEXTS, vocab_size=300)
    source = ExportSource(recipe.model, folder, folder, template, (0.5,) * 3, (0.5,) * 3, 4)
    processor(source, tokenizer).save_pretrained(str(folder))
    return tokenizer, transformers.AutoProcessor.from_pretrained(str(folder))


@pytest.mark.parametrize("template", ["chat", "plain"])
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_the_folder_chat_template_prompts_as_vlmforge_does(tmp_path: Path, kind: str, template: str) -> None:
    from vlmforge.interop.hf_local import chat_prompter

    tokenizer, loaded = _saved_processor(tmp_path, kind, template)
    prompter = chat_prompter(loaded, IMAGE_TOKENS)
    for question in ASKED:
        expected = prompt_ids(tokenizer, question, template, IMAGE_TOKENS, BUILT_IMAGE_ID)
        assert prompter(question) == expected, (kind, template, question)
    with_image = prompter(ASKED[0])
    assert with_image.count(BUILT_IMAGE_ID) == IMAGE_TOKENS and with_image[0] == tokenizer.bos_token_id


def test_chat_content_places_the_image_where_the_question_does() -> None:
    from vlmforge.interop.hf_local import chat_content

    assert chat_content(f"{IMAGE}\nWhat digit?") == [
        {"type": "image"},
        {"type": "text", "text": "What digit?"},
    ]
    assert chat_content("What digit?") == [{"type": "text", "text": "What digit?"}]
    assert chat_content(f"Look: {IMAGE} which?") == [
        {"type": "text", "text": "Look:"},
        {"type": "image"},
        {"type": "text", "text": "which?"},
    ]


def _clip_images(**overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "size": {"shortest_edge": 24},
        "crop_size": {"height": 24, "width": 24},
        "resample": 3,
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.25, 0.3],
    }
    return transformers.CLIPImageProcessor(**(settings | overrides))


def test_image_processors_are_taken_or_refused_by_what_square_tensor_reproduces(tmp_path: Path) -> None:
    from vlmforge.interop.hf_local import image_transform
    from vlmforge.interop.inference import ImageTransform

    assert image_transform(tmp_path, _clip_images()) == ImageTransform(24, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    plain = image_transform(tmp_path, _clip_images(do_normalize=False))
    assert (plain.mean, plain.std) == ((0.0,) * 3, (1.0,) * 3)
    refused = {
        "size": transformers.SiglipImageProcessor(),  # resized to 224 x 224 whatever the aspect ratio
        "crop_size": _clip_images(crop_size={"height": 20, "width": 20}),
        "resample": _clip_images(resample=2),
        "do_center_crop": _clip_images(do_center_crop=False),
        "rescale_factor": _clip_images(rescale_factor=1.0),
    }
    for name, processor in refused.items():
        with pytest.raises(UserError, match=name) as caught:
            image_transform(tmp_path, processor)
        assert "shortest side" in caught.value.hint


def test_folder_tokenizer_pads_to_the_context_length(tmp_path: Path) -> None:
    from vlmforge.interop.hf_local import FolderTokenizer

    inner = build_tokenizer("word", TEXTS)
    inner.pad_token = None  # a tokenizer without one pads with its end token
    tok = FolderTokenizer(inner)
    ids = tok(["What digit is this?", "seven"], 8)
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert tok.pad_id == tok.end_id == inner.eos_token_id and tok.vocab_size == len(inner)
    assert tok.decode(ids[1].tolist()) == "seven"


def test_unknown_model_types_and_broken_configs_are_refused(tmp_path: Path) -> None:
    from vlmforge.interop.inference import is_transformers_folder, load_for_inference

    cases = {
        "model_type 'bert' is not read here": {"model_type": "bert"},
        "no model_type": {"architectures": ["X"]},
    }
    for n, (message, config) in enumerate(cases.items()):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(UserError, match=message) as caught:
            load_for_inference(folder, "cpu")
        assert caught.value.hint
    (tmp_path / "0" / "recipe.yaml").write_text("name: x\n")
    assert not is_transformers_folder(tmp_path / "0")  # a LLaVA run folder has a config.json too
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_for_inference(tmp_path / "bad", "cpu")
