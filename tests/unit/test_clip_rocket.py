"""CLIP-rocket's cross-modal augmentation: the loss against a hand-computed case and the official loss, the
EDA caption views, the recipe section and what the planner counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import DEBUG_RECIPE
from vlmforge.config.augment import AugmentConfig, TextAugment
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.data.base import ImageTextSet
from vlmforge.data.loader import CaptionedImages, collate
from vlmforge.data.text_augment import AugmentedCaptions, augment_caption, random_deletion, random_swap
from vlmforge.data.tokenizers import WordVocab
from vlmforge.errors import UserError
from vlmforge.losses import cross_augmented_loss
from vlmforge.models.contrastive import build_model, synthetic_loss
from vlmforge.planning.flops import count_on_meta

# ------------------------------------------------------------------------------------------------ loss


def test_loss_on_orthonormal_pairs_matches_the_hand_computed_value() -> None:
    """Two pairs, every view equal to e1/e2: each InfoNCE row has logits (t, 0), so the weak term is
    log(1 + e^-s); with label smoothing eps over 2 classes the strong term is log(1 + e^-h) + eps h / 2."""
    eye = torch.eye(2)
    s, h, eps = 3.0, 2.0, 0.1
    out = cross_augmented_loss(
        (eye, eye), (eye, eye), ([eye], [eye]), ([eye], [eye]), torch.tensor(s), torch.tensor(h),
        torch.arange(2), eps,
    )  # fmt: skip
    weak = math.log(1 + math.exp(-s))
    strong = math.log(1 + math.exp(-h)) + eps * h / 2
    assert out["contrastive"].item() == pytest.approx(weak, abs=1e-6)
    assert out["augmented"].item() == pytest.approx(strong, abs=1e-6)
    assert out["loss"].item() == pytest.approx((weak + strong) / 2, abs=1e-6)  # V = 1: weights 1 and 1


def test_loss_matches_the_official_cl2l_loss() -> None:
    """Reference: ``CL2LLoss("avg", label_smoothing=0.1)`` of facebookresearch/clip-rocket, losses.py at
    commit ebd9e5863caec05e7a76719a1fb52e9cbaf59562, run once in one process (``utils.get_rank`` -> 0,
    ``all_gather_batch`` -> identity) on exactly these inputs with logit_scale 5 and h_logit_scale 10."""
    zi = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0]])
    zt = torch.tensor([[0.9, 0.1, 0.4], [0.0, 0.8, 0.1], [0.3, -0.2, 0.7]])
    hi = [
        torch.tensor([[0.5, 0.5, 0.0], [0.1, -1.0, 0.2], [0.0, 0.3, 0.9]]),
        torch.tensor([[1.0, 0.2, 0.1], [-0.2, 0.6, 0.0], [0.4, 0.4, 0.4]]),
    ]
    ht = [
        torch.tensor([[0.7, 0.2, -0.1], [0.3, -0.5, 0.1], [0.1, 0.2, 1.0]]),
        torch.tensor([[0.2, 0.9, 0.0], [0.6, 0.1, 0.3], [-0.3, 0.0, 0.5]]),
    ]
    out = cross_augmented_loss(
        (zi, zt), (zi, zt), (hi, ht), (hi, ht), torch.tensor(5.0), torch.tensor(10.0), torch.arange(3), 0.1
    )
    assert out["loss"].item() == pytest.approx(2.2021522521972656, abs=1e-5)
    assert out["contrastive"].item() == pytest.approx((0.1398358941078186 + 0.3286381661891937) / 2, abs=1e-5)
    assert out["augmented"].item() == pytest.approx((3.1264636516571045 + 3.245755672454834) / 2, abs=1e-5)


def test_local_queries_on_two_ranks_equal_one_process() -> None:
    """Each rank scoring its half against all keys: the mean loss and its gradients equal one process's."""
    generator = torch.Generator().manual_seed(0)
    feats = [torch.randn(6, 4, generator=generator, requires_grad=True) for _ in range(6)]
    zi, zt, hi1, hi2, ht1, ht2 = feats

    def on(rows: slice, labels: torch.Tensor) -> torch.Tensor:
        weak = (zi[rows], zt[rows])
        strong = ([hi1[rows], hi2[rows]], [ht1[rows], ht2[rows]])
        keys = ([hi1, hi2], [ht1, ht2])
        return cross_augmented_loss(
            weak, (zi, zt), strong, keys, torch.tensor(4.0), torch.tensor(8.0), labels, 0.1
        )["loss"]

    single = on(slice(None), torch.arange(6))
    ranks = (on(slice(0, 3), torch.arange(3)) + on(slice(3, 6), torch.arange(3) + 3)) / 2
    assert torch.allclose(single, ranks, atol=1e-6)
    for one, two in zip(torch.autograd.grad(single, feats), torch.autograd.grad(ranks, feats), strict=True):
        assert torch.allclose(one, two, atol=1e-6)


# ------------------------------------------------------------------------------------- caption views
def test_eda_operations_keep_or_drop_words_as_documented() -> None:
    rng = np.random.default_rng(0)
    words = ["one", "small", "red", "cube", "on", "the", "wooden", "table"]
    swapped = random_swap(words, 1, rng)
    assert sorted(swapped) == sorted(words) and sum(a != b for a, b in zip(swapped, words, strict=True)) == 2
    kept = random_deletion(words, 0.5, rng)
    assert 1 <= len(kept) < len(words) and all(w in words for w in kept)
    assert random_deletion(words, 0.999, np.random.default_rng(1))[0] in words  # never empty
    assert random_swap(["one"], 3, rng) == ["one"] and random_deletion(["one"], 0.9, rng) == ["one"]
    keep = TextAugment(keep_weight=1.0, swap_weight=0.0, deletion_weight=0.0)
    assert augment_caption("a red cube", keep, rng) == "a red cube"
    swap_only = TextAugment(swap_weight=1.0, deletion_weight=0.0)
    assert sorted(augment_caption("a red cube", swap_only, rng).split()) == ["a", "cube", "red"]


def test_dataset_adds_reproducible_caption_views() -> None:
    captions = ["a photo of the digit five", "a red cube left of a blue sphere", "a dog chasing a cat"]
    data = ImageTextSet(
        name="small",
        keys=[str(i) for i in range(3)],
        captions=[[c] for c in captions],
        load_image=torch.zeros(3, 3, 8, 8).__getitem__,
        labels=np.arange(3),
        classnames=["a", "b", "c"],
    )
    vocab = WordVocab.build(data.all_captions())
    views = AugmentedCaptions(CaptionedImages(data, vocab, 16, seed=3), TextAugment(), 2)
    batch = collate([views[(0, 0, i)] for i in range(3)])
    assert batch["augmented_text"].shape == (3, 2, 16)
    assert torch.equal(views[(0, 0, 1)]["augmented_text"], batch["augmented_text"][1])  # same key, same views
    decoded = [[vocab.decode(v.tolist()).split() for v in item] for item in batch["augmented_text"]]
    for caption, item in zip(captions, decoded, strict=True):
        assert all(set(view) <= set(caption.split()) for view in item)
    assert any(
        view != caption.split() for caption, item in zip(captions, decoded, strict=True) for view in item
    )
    again = [views[(1, 0, i)]["augmented_text"] for i in range(3)]
    assert any(not torch.equal(a, b) for a, b in zip(again, batch["augmented_text"], strict=True))


# ------------------------------------------------------------------------------------ recipe + plan
def test_recipe_section_validates() -> None:
    recipe = load_recipe("pretrain", find_recipe("debug/clip-rocket-tiny"))
    assert recipe.model.augment is not None and recipe.model.augment.strong_views == 1
    assert AugmentConfig().weak.crop_scale == (0.5, 1.0) and AugmentConfig().strong.crop_scale == (0.08, 1.0)
    with pytest.raises(UserError, match="kind: clip"):
        load_recipe("pretrain", find_recipe("debug/siglip-tiny"), ["model.augment={}"])
    with pytest.raises(UserError, match="hard_negatives"):
        load_recipe("pretrain", find_recipe("debug/negclip-tiny"), ["model.augment={}"])
    with pytest.raises(UserError, match="strong_vews"):
        load_recipe("pretrain", DEBUG_RECIPE, ["model.augment={strong_vews: 2}"])
    with pytest.raises(UserError, match="cannot all be 0"):
        load_recipe("pretrain", DEBUG_RECIPE, ["model.augment.text={swap_weight: 0, deletion_weight: 0}"])


@pytest.mark.parametrize("heads", ["mlp", "linear"])
def test_planner_counts_the_strong_views(heads: str) -> None:
    """Each strong view is one more pass of both towers: V = 2 roughly triples the FLOPs per sample."""
    plain = load_recipe("pretrain", DEBUG_RECIPE).model
    rocket = load_recipe(
        "pretrain", DEBUG_RECIPE, [f"model.augment={{strong_views: 2, heads: {heads}, hidden_dim: 64}}"]
    ).model

    def flops(cfg: object) -> int:
        step = count_on_meta(
            lambda: build_model(cfg, 100, device="meta"), lambda m: synthetic_loss(cfg, m, 1, "meta", 100)
        )
        return step.train

    assert 2.9 * flops(plain) < flops(rocket) < (3.5 if heads == "mlp" else 3.1) * flops(plain)
