"""LLaVA-NeXT's anyres layout: grid choice and token counts against transformers, the tiny model's real
image features, the recipe fields, the small-digit canvases and the planner on the LLaVA-NeXT-7B recipe."""

from __future__ import annotations

from typing import cast

import pytest
import torch
from pydantic import ValidationError

from vlmforge.config.llava import LlavaModel
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import DigitCanvases, FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.tiling import anyres_tokens, best_resolution, crop_count, max_anyres_tokens

transformers = pytest.importorskip("transformers")

NEXT_PINPOINTS = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]  # llava-v1.6
# Image tokens of llava-hf's LLaVA-NeXT layout (crop 336, patch 14, 'default' drops the class token) for
# (height, width) images, computed once with transformers 5.24.0's own counter:
# LlavaNextProcessor._get_number_of_features(h, w, 336, 336) - 1, with patch_size 14,
# num_additional_image_tokens 1 and LlavaNextImageProcessor's default grid pinpoints (the list above).
NEXT_TOKENS = {
    (672, 672): 2928,
    (336, 672): 1752,
    (672, 336): 1776,
    (1008, 336): 2376,
    (336, 1008): 2328,
    (480, 640): 2340,
    (1080, 1920): 1948,
    (224, 224): 1176,
    (500, 333): 1476,
}
TINY = find_recipe("debug/llava-anyres-tiny")
SINGLE = ("model.image_layout=single", "model.grid_pinpoints=[]", "model.anyres_image_size=null")
SIZES = [(48, 48), (20, 37), (37, 20), (16, 48), (33, 9), (64, 64), (12, 30)]


def _tiny(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", TINY, list(overrides)))


@pytest.mark.parametrize("size", [*NEXT_TOKENS, (1, 1000), (999, 2), (337, 671)])
def test_best_resolution_is_transformers_choice(size: tuple[int, int]) -> None:
    from transformers.image_processing_utils import select_best_resolution

    assert best_resolution(size, NEXT_PINPOINTS) == tuple(select_best_resolution(size, NEXT_PINPOINTS))


@pytest.mark.parametrize(("size", "tokens"), NEXT_TOKENS.items())
def test_token_count_matches_llava_next_processor(size: tuple[int, int], tokens: int) -> None:
    assert anyres_tokens(size, NEXT_PINPOINTS, 336, 14) == tokens


def test_most_tokens_is_the_full_2x2_grid() -> None:
    # 576 global + 48 rows x (48 features + newline): the 672x672 count above
    assert max_anyres_tokens(NEXT_PINPOINTS, 336, 14) == 576 + 48 * 49 == NEXT_TOKENS[(672, 672)]


def test_token_count_is_the_models_image_feature_count() -> None:
    from vlmforge.models import llava
    from vlmforge.models.llava_anyres import tile

    cfg = _tiny().model
    model = llava.build_model(cfg, 40, image_id=4)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    pinpoints = [list(p) for p in cfg.grid_pinpoints]
    for size in SIZES:
        inputs = tile(torch.randn(1, 3, *size), pinpoints, cfg.vision.image_size)
        assert inputs["pixel_values"].shape[1] == crop_count(size, cfg.grid_pinpoints, 16)
        assert inputs["image_sizes"].tolist() == [list(size)]
        with torch.no_grad():
            features = model.model.get_image_features(**inputs).pooler_output
        assert len(features[0]) == anyres_tokens(size, cfg.grid_pinpoints, 16, 4), size


def test_tiles_hold_the_global_view_then_the_grid_rows() -> None:
    from vlmforge.models.llava_anyres import tile

    image = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).expand(1, 3, 32, 32)
    crops = tile(image, [[32, 32]], 16)["pixel_values"][0]  # already the pinpoint's size: no resizing
    assert crops.shape == (5, 3, 16, 16)
    assert torch.equal(crops[1], image[0, :, :16, :16]) and torch.equal(crops[2], image[0, :, :16, 16:])
    assert torch.equal(crops[3], image[0, :, 16:, :16]) and torch.equal(crops[4], image[0, :, 16:, 16:])


def test_recipe_counts_anyres_tokens_and_single_layout_is_unchanged() -> None:
    from vlmforge.models import llava

    anyres = _tiny().model
    assert anyres.input_side == 32 and anyres.image_tokens == 16 + 8 * 9  # 2x2 grid of 4x4 features
    single = _tiny(*SINGLE).model
    assert single.input_side == 16 and single.image_tokens == 16
    config = llava.hf_config(single, 40, 4)
    assert type(config).__name__ == "LlavaConfig"
    pinpoints = [[32, 32], [16, 32], [32, 16], [16, 48], [48, 16]]
    assert llava.hf_config(anyres, 40, 4).image_grid_pinpoints == pinpoints


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_layout": "anyres"}, "needs grid_pinpoints"),
        ({"image_layout": "anyres", "grid_pinpoints": [[16, 24]]}, "not positive multiples"),
        ({"grid_pinpoints": [[16, 32]]}, "need image_layout: anyres"),
        (
            {"image_layout": "anyres", "grid_pinpoints": [[16, 32]], "projector": "mapl"},
            "linear or mlp2x_gelu",
        ),
        ({"image_layout": "anyres", "grid_pinpoints": [[160, 160]]}, "exceed"),
    ],
)
def test_bad_anyres_fields_are_refused(fields: dict[str, object], message: str) -> None:
    tiny = {
        "vision": {
            "image_size": 16,
            "patch_size": 4,
            "width": 32,
            "layers": 2,
            "heads": 2,
            "intermediate_size": 64,
        },
        "llm": {
            "hidden_size": 64,
            "layers": 2,
            "heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 256,
        },
        "max_text_tokens": 24,
    }
    with pytest.raises(ValidationError, match=message):
        LlavaModel.model_validate({**tiny, **fields})


def test_newline_trains_with_the_projector() -> None:
    from vlmforge.models import llava

    cfg = _tiny().model
    model = llava.prepare_stage(llava.build_model(cfg, 40, image_id=4), cfg, "projector")
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    assert "model.image_newline" in trained
    assert all(name.startswith(("model.multi_modal_projector.", "model.image_newline")) for name in trained)


def test_digit_canvases_keep_the_digit_pixels_on_a_black_canvas() -> None:
    from sklearn.datasets import load_digits

    from vlmforge.data.digit_canvases import digit_canvases, render_canvases

    cfg = DigitCanvases(canvas_size=48, digit_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    raw = load_digits().images[:5].astype("float32") / 16.0
    canvases, places = render_canvases(raw, cfg)
    for n, (row, column) in enumerate(places):
        pasted = canvases[n, 0, row : row + 8, column : column + 8]
        assert torch.allclose(
            pasted, torch.from_numpy(raw[n]), atol=1e-6
        )  # 8 px digits are pasted as they are
        assert canvases[n].sum() == pytest.approx(3 * float(raw[n].sum()), rel=1e-5)  # black elsewhere
    data = digit_canvases(cfg, 48)
    assert len(data) == 1797 and data.image(0).shape == (3, 48, 48)
    assert data.turns(0)[1] == ("gpt", "zero") and data.turns(0)[0][1].startswith("<image>\n")


@pytest.mark.slow
def test_planner_counts_the_anyres_image_tokens_of_llava_next_7b() -> None:
    from vlmforge.verbs import plan

    recipe = load_recipe("finetune", find_recipe("llava/llava-next-7b-anyres"))
    assert isinstance(recipe, FinetuneRecipe) and recipe.model.image_tokens == 2928
    align, instruct = plan.run(recipe, ["a100-80gb"], [8]).stages
    # a frozen LLM costs about 4·N·T, a trained one 6·N·T, attention 3 x 4·L·T²·d (forward, then twice that
    # backward) on top; the five frozen ViT-L crops add ~2%
    llm, layers, width = 6.61e9, 32, 4096
    for stage, factor, text in ((align, 4, 64), (instruct, 6, 512)):
        tokens = 2928 + text
        expected = factor * llm * tokens + 3 * 4 * layers * tokens**2 * width
        assert stage.flops_per_sample == pytest.approx(expected, rel=0.05)
