"""open_clip ``VisionTransformer`` -> timm ``VisionTransformer``: the mapping on every variant a vlmforge
image tower can take, what is refused, and the config.json fields timm reads."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from open_clip.transformer import QuickGELU, VisionTransformer

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import PretrainRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.interop import EXPORTERS, formats_for
from vlmforge.interop.timm_export import (
    ARCHITECTURE,
    check_names,
    model_args,
    pretrained_cfg,
    timm_config,
    timm_state,
)


def tower(**options: Any) -> VisionTransformer:
    """A small open_clip image tower with weights far from their initial values (LayerNorm scales and
    biases included, so a norm mapped to the wrong place shows)."""
    settings: dict[str, Any] = dict(
        image_size=16, patch_size=4, width=32, layers=2, heads=2, mlp_ratio=2.0, output_dim=24
    )
    visual = VisionTransformer(**(settings | options)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in visual.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return visual


def as_timm(visual: VisionTransformer) -> torch.nn.Module:
    import timm

    args, state = model_args(visual), timm_state(visual)
    check_names(args, state)
    model = timm.create_model(ARCHITECTURE, pretrained=False, **args).eval()
    model.load_state_dict(state, strict=True)
    return model


VARIANTS = {
    "tok": {"pool_type": "tok"},
    "avg": {"pool_type": "avg"},
    "ln-after-pool-tok": {"pool_type": "tok", "final_ln_after_pool": True},
    "ln-after-pool-avg": {"pool_type": "avg", "final_ln_after_pool": True},
    "layer-scale-quick-gelu": {"ls_init_value": 0.1, "act_layer": QuickGELU},
    "no-ln-pre": {"no_ln_pre": True},
    "sin-cos-positions": {"pos_embed_type": "sin_cos_2d"},
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=list(VARIANTS))
def test_timm_vit_computes_the_open_clip_tower(options: dict[str, Any]) -> None:
    visual = tower(**options)
    model = as_timm(visual)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = visual(x)
        assert (model(x) - expected).abs().max() <= 1e-5
        out = visual.forward_intermediates(x, indices=1, output_fmt="NLC", output_extra_tokens=True)
        tokens = torch.cat([out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1)
        if not visual.final_ln_after_pool:  # else both leave the tokens un-normalised
            tokens = visual.ln_post(tokens)
        assert (model.forward_features(x) - tokens).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "recipe",
    ["debug/clip-tiny", "debug/siglip-tiny", "debug/coca-tiny", "debug/mae-tiny", "debug/flava-tiny"],
)
def test_each_kinds_image_tower_maps_to_its_unnormalised_image_features(recipe: str) -> None:
    from vlmforge.families import family_for

    cfg = load_recipe("pretrain", find_recipe(recipe)).model
    model = family_for(cfg).models.build_model(cfg, 40).eval()
    timm_model = as_timm(model.visual)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():  # CoCa's encode_image normalises by default: timm gives the feature before that
        assert (timm_model(x) - model.encode_image(x, normalize=False)).abs().max() <= 1e-5


def test_cocas_default_attentional_pooler_is_refused() -> None:
    from vlmforge.families import family_for

    pooler = ["model.vision.attentional_pool=true"]
    cfg = load_recipe("pretrain", find_recipe("debug/coca-tiny"), pooler).model
    with pytest.raises(UserError, match=r"vision\.attentional_pool: false"):
        model_args(family_for(cfg).models.build_model(cfg, 40).visual)


def test_a_tower_without_projection_is_a_headless_timm_vit() -> None:
    visual = tower(pool_type="avg")
    visual.proj = None  # the MAE encoder's image feature is its pooled output
    model = as_timm(visual)
    assert model_args(visual)["num_classes"] == 0 and isinstance(model.head, torch.nn.Identity)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - visual(x)).abs().max() <= 1e-5


def test_the_projection_is_a_zero_bias_head() -> None:
    visual = tower()
    state = timm_state(visual)
    assert torch.equal(state["head.weight"], visual.proj.detach().T)
    assert not state["head.bias"].any()
    assert "patch_embed.proj.bias" not in state  # pre-norm: timm's patch convolution has no bias either
    assert not timm_state(tower(no_ln_pre=True))["patch_embed.proj.bias"].any()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"attentional_pool": True}, "attentional pooler"),
        ({"qk_norm": True}, "CustomResidualAttentionBlock"),
        ({"pool_type": "none"}, "'none'"),
        ({"norm_layer": lambda width: torch.nn.LayerNorm(width, eps=1e-6)}, "eps"),
        ({"act_layer": torch.nn.SiLU}, "SiLU"),
    ],
    ids=["attentional-pool", "custom-block", "no-pooling", "norm-eps", "activation"],
)
def test_what_timm_cannot_express_is_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(UserError, match=named):
        model_args(tower(**options))


def test_a_resnet_tower_is_refused() -> None:
    from open_clip.modified_resnet import ModifiedResNet

    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=8, heads=2, image_size=32, width=8)
    with pytest.raises(UserError, match="ModifiedResNet"):
        model_args(resnet)


def test_a_mapping_timm_would_not_load_fails_at_export() -> None:
    visual = tower()
    state = timm_state(visual)
    del state["blocks.1.mlp.fc2.bias"]
    with pytest.raises(RuntimeError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        check_names(model_args(visual), state)


def test_config_carries_the_training_transform() -> None:
    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    assert isinstance(recipe, PretrainRecipe)
    args = model_args(tower())
    config = timm_config(args, recipe)
    assert config["architecture"] == ARCHITECTURE and config["model_args"] == args
    cfg = config["pretrained_cfg"]
    assert cfg == pretrained_cfg(recipe, 16, 24)
    assert cfg["input_size"] == [3, 16, 16] and cfg["num_classes"] == 24
    # crop_pct 1.0: shortest side to the input size itself, then the centre crop (vlmforge's square_tensor)
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"]) == (1.0, "center", "bicubic")
    assert cfg["mean"] == list(recipe.data.mean) and cfg["std"] == list(recipe.data.std)


def test_timm_format_serves_every_kind_with_an_open_clip_image_tower() -> None:
    for kind in ("clip", "siglip", "coca", "masked", "flava"):
        assert "timm" in formats_for(kind)
    assert EXPORTERS[("timm", "masked")] == "vlmforge.interop.timm_export:export"
    assert "timm" not in formats_for("llava")
