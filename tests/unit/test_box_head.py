"""X-VLM's box head on a CLIP: its loss against X-VLM's, its config checks, the planner counting it, and the
canvases giving each sample its box."""

from __future__ import annotations

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import BoxCanvases, PretrainRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.losses import box_loss
from vlmforge.planning.estimate import recipe_model_costs


def _recipe(*overrides: str) -> PretrainRecipe:
    recipe = load_recipe("pretrain", find_recipe("debug/clip-box-tiny"), list(overrides))
    assert isinstance(recipe, PretrainRecipe)
    return recipe


def test_box_loss_matches_xvlm() -> None:
    # Reference: X-VLM's XVLMBase.get_bbox_loss (github.com/zengyan-97/X-VLM, models/xvlm.py) with DETR's
    # util/box_ops.py generalized_box_iou, ported to a throw-away script and run once in float64 on these
    # boxes converted to (cx, cy, w, h): loss_bbox 0.7583333333333334, loss_giou 1.0471238637905305.
    predicted = torch.tensor(
        [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8], [0.0, 0.0, 0.2, 0.2]], dtype=torch.float64
    )
    target = torch.tensor(
        [[0.15, 0.25, 0.45, 0.7], [0.5, 0.1, 0.95, 0.6], [0.6, 0.6, 0.9, 0.95]], dtype=torch.float64
    )
    terms = box_loss(predicted, target)
    # torchvision adds eps=1e-7 to the union and the enclosing area, DETR does not: agree to ~1e-7
    assert terms["box_l1"].item() == pytest.approx(0.7583333333333334, rel=1e-12)
    assert terms["box_giou"].item() == pytest.approx(1.0471238637905305, abs=1e-6)
    assert terms["box"].item() == pytest.approx(0.7583333333333334 + 1.0471238637905305, abs=1e-6)


def test_box_head_is_plain_clip_only() -> None:
    with pytest.raises(UserError, match="use it with kind: clip"):
        _recipe("model.kind=siglip")
    with pytest.raises(UserError, match="box_head is added to plain InfoNCE"):
        _recipe("model.multi_positive=true")
    with pytest.raises(UserError, match=r"must divide vision\.width"):
        _recipe("model.box_head.heads=3")
    with pytest.raises(UserError, match=r"model\.box_head\.layers: unknown key"):
        _recipe("model.box_head.layers=2")


def test_planner_counts_the_box_head() -> None:
    with_head = recipe_model_costs(_recipe())[0].total_flops
    without = recipe_model_costs(_recipe("model.box_head=null"))[0].total_flops
    assert with_head > without


def test_canvases_carry_the_box_of_the_expression() -> None:
    from vlmforge.data.sources import train_val_split

    cfg = BoxCanvases(image_size=16, canvases={"count": 20, "val_fraction": 0.25})
    train, val = train_val_split(cfg)
    assert (len(train), len(val)) == (15, 5)
    for data in (train, val):
        for i in range(len(data)):
            x1, y1, x2, y2 = data.box(i)
            side = x2 - x1  # canvas objects are squares of 8..12 pixels on a 32-pixel canvas
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert side == pytest.approx(y2 - y1) and 8 / 32 <= side <= 12 / 32
