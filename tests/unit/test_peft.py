"""Contrastive finetuning pieces: the method union in recipes, few-shot sampling and splits, class
folders, LoRA targets, WiSE-FT interpolation, and the prompt/adapter classifiers on a tiny open_clip CLIP."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.peft import ClassFolders, ClipAdapter, ContrastiveFinetuneRecipe, CoOp, LoraFamily, Vpt
from vlmforge.config.schema import recipe_verb
from vlmforge.data.classification import (
    ImageFormat,
    classification_splits,
    few_shot,
    stratified_split,
    validation_splits,
)
from vlmforge.errors import UserError
from vlmforge.models.peft.lora import target_pattern
from vlmforge.models.peft.wise_ft import best_point, interpolate, mean_curve

BASE = {"name": "t", "init_from": "runs/x", "data": {"kind": "digits"}}


def _recipe(**method: object) -> ContrastiveFinetuneRecipe:
    recipe = load_recipe("finetune", None, base={**BASE, "method": method})
    assert isinstance(recipe, ContrastiveFinetuneRecipe)
    return recipe


def test_method_union_is_tagged_and_strict() -> None:
    assert recipe_verb({**BASE, "method": {"method": "coop"}}) == "finetune"
    assert isinstance(_recipe(method="dora").method, LoraFamily)
    assert isinstance(_recipe(method="vpt", deep=True).method, Vpt)
    with pytest.raises(UserError, match="method"):
        _recipe(method="prefix")
    with pytest.raises(UserError, match="prompt_tokens"):
        _recipe(method="coop", prompt_tokens=4)  # a VPT field on CoOp
    with pytest.raises(UserError, match="class_specific"):
        _recipe(method="coop", class_specific=True, init="a photo of a")
    with pytest.raises(UserError, match="shots"):
        load_recipe(
            "finetune",
            None,
            base={**BASE, "data": {"kind": "digits", "shots": 3}, "method": {"method": "vpt"}},
        )


def test_few_shot_is_seeded_and_balanced() -> None:
    labels = np.repeat(np.arange(3), 20)
    names = ["a", "b", "c"]
    first, again, other = (few_shot(labels, 4, seed, names) for seed in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.bincount(labels[first]).tolist() == [4, 4, 4]
    with pytest.raises(UserError, match="fewer training images"):
        few_shot(labels[:25], 8, 0, names)  # class b has 5, class c none


def test_stratified_split_holds_out_each_class() -> None:
    labels = np.repeat(np.arange(4), 10)
    kept, held = stratified_split(labels, 0.2, 0)
    assert not set(kept) & set(held) and len(kept) + len(held) == 40
    assert np.bincount(labels[held]).tolist() == [2, 2, 2, 2]


def test_validation_splits_hold_out_shots_and_leave_test_alone() -> None:
    from vlmforge.config.peft import DigitsClasses

    splits = classification_splits(DigitsClasses(shots=4), ImageFormat(16, (0.5,) * 3, (0.5,) * 3), seed=0)
    held = validation_splits(splits, 0.5, seed=0)
    assert np.bincount(held.train.labels).tolist() == [2] * 10
    assert np.bincount(held.test.labels).tolist() == [2] * 10
    fit, validate = set(held.train.sources.tolist()), set(held.test.sources.tolist())
    assert not fit & validate and fit | validate == set(splits.train.sources.tolist())
    assert not validate & set(splits.test.sources.tolist()) and held.classnames == splits.classnames


def test_digits_splits_keep_chosen_classes() -> None:
    from vlmforge.config.peft import DigitsClasses

    cfg = DigitsClasses(classes=[3, 7], shots=2)
    splits = classification_splits(cfg, ImageFormat(16, (0.5,) * 3, (0.5,) * 3), seed=0)
    assert splits.classnames == ["three", "seven"]
    assert sorted(splits.train.labels.tolist()) == [0, 0, 1, 1]
    images, labels = splits.test.batch(np.arange(3))
    assert images.shape == (3, 3, 16, 16) and set(labels.tolist()) <= {0, 1}


def test_class_folders_with_names_file(tmp_path: Path) -> None:
    from PIL import Image

    for folder, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
        (tmp_path / "train" / folder).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 24), colour).save(tmp_path / "train" / folder / f"{i}.png")
    names = tmp_path / "classnames.txt"
    names.write_text("n01\tred square\nn02\tblue square\n", encoding="utf-8")
    cfg = ClassFolders(path=tmp_path / "train", classnames=names, shots=2, val_fraction=0.4)
    splits = classification_splits(cfg, ImageFormat(8, (0.0,) * 3, (1.0,) * 3), seed=0)
    assert splits.classnames == ["red square", "blue square"]
    assert len(splits.train) == 4 and len(splits.test) == 4
    images, labels = splits.test.batch(np.arange(len(splits.test)))
    red = images[labels == 0]
    assert torch.allclose(red[:, 0], torch.ones_like(red[:, 0]), atol=1e-2)  # red channel full
    names.write_text("n02\tblue\nn01\tred\n", encoding="utf-8")
    with pytest.raises(UserError, match="sorted"):
        classification_splits(cfg, ImageFormat(8, (0.0,) * 3, (1.0,) * 3), seed=0)


def test_lora_targets_only_the_chosen_tower() -> None:
    pattern = target_pattern(LoraFamily(method="lora", towers=["visual"], modules=["c_fc", "out_proj"]))
    assert re.fullmatch(pattern, "visual.transformer.resblocks.3.mlp.c_fc")
    assert re.fullmatch(pattern, "visual.transformer.resblocks.0.attn.out_proj")
    assert not re.fullmatch(pattern, "transformer.resblocks.0.mlp.c_fc")
    assert not re.fullmatch(pattern, "visual.transformer.resblocks.0.mlp.c_proj")


def test_lora_refuses_attention_projections_multihead_attention_never_calls() -> None:
    from vlmforge.models.peft.lora import add_lora

    with pytest.raises(UserError, match="never calls"):
        add_lora(_tiny_clip(), LoraFamily(method="lora", modules=["out_proj", "c_fc"]), seed=0)


def test_wise_ft_interpolation_ends() -> None:
    zero, tuned = {"w": torch.zeros(3)}, {"w": torch.tensor([2.0, 4.0, -2.0])}
    assert torch.equal(interpolate(zero, tuned, 0.0)["w"], zero["w"])
    assert torch.equal(interpolate(zero, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(interpolate(zero, tuned, 0.25)["w"], torch.tensor([0.5, 1.0, -0.5]))


def test_wise_ft_alpha_from_the_mean_of_fold_curves() -> None:
    first = [{"alpha": 0.0, "top1": 0.5}, {"alpha": 0.5, "top1": 0.7}, {"alpha": 1.0, "top1": 0.9}]
    second = [{"alpha": 0.0, "top1": 0.5}, {"alpha": 0.5, "top1": 0.9}, {"alpha": 1.0, "top1": 0.6}]
    mean = mean_curve([first, second])
    assert [row["alpha"] for row in mean] == [0.0, 0.5, 1.0]
    assert [row["top1"] for row in mean] == pytest.approx([0.5, 0.8, 0.75])
    # each fold alone would pick another alpha than their mean does
    assert (best_point(first)["alpha"], best_point(second)["alpha"], best_point(mean)["alpha"]) == (
        1.0,
        0.5,
        0.5,
    )
    with pytest.raises(ValueError, match="same alphas"):
        mean_curve([first, second[:2]])


def test_wise_ft_best_point_ties_go_to_the_middle_then_the_smaller_alpha() -> None:
    curve = [{"alpha": a, "top1": 0.8} for a in (0.0, 0.3, 0.7, 1.0)]
    assert best_point(curve)["alpha"] == 0.3
    assert best_point([*curve, {"alpha": 0.5, "top1": 0.8}])["alpha"] == 0.5
    assert best_point([*curve, {"alpha": 0.9, "top1": 0.81}])["alpha"] == 0.9


def _tiny_clip() -> torch.nn.Module:
    import open_clip

    torch.manual_seed(0)
    vision = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 16}
    text = {"context_length": 12, "vocab_size": 40, "width": 32, "heads": 2, "layers": 1}
    return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


def _tokens(prompts: int) -> torch.Tensor:
    tokens = torch.zeros(prompts, 12, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:7], tokens[:, 7] = 1, torch.arange(3, 9), 39  # start, words, end (highest id)
    return tokens


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_gradients_reach_prompts_only(deep: bool) -> None:
    from vlmforge.models.peft.vpt import VptClassifier

    classifier = VptClassifier(_tiny_clip(), _tokens(3), 1, Vpt(prompt_tokens=2, deep=deep))
    assert classifier.visual_prompts.shape == (2 if deep else 1, 2, 32)
    logits = classifier(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert classifier.visual_prompts.grad is not None and classifier.visual_prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in classifier.clip.parameters())


def test_coop_context_replaces_placeholders_and_trains_alone() -> None:
    from vlmforge.models.peft.coop import CoOpClassifier

    clip = _tiny_clip()
    classifier = CoOpClassifier(clip, _tokens(3), CoOp(context_tokens=2, class_specific=True), None)
    assert classifier.context.shape == (3, 2, 32)
    with torch.no_grad():  # with the placeholders' own embeddings as context, CoOp's text path is CLIP's
        classifier.context.copy_(clip.token_embedding(_tokens(3)[:, 1:3]))
        assert torch.allclose(classifier.prompt_features(), clip.encode_text(_tokens(3)), atol=1e-5)
    classifier(torch.randn(2, 3, 16, 16)).sum().backward()
    assert classifier.context.grad is not None and all(p.grad is None for p in clip.parameters())


def test_clip_adapter_blends_by_ratio() -> None:
    from vlmforge.models.peft.clip_adapter import ClipAdapterClassifier

    clip = _tiny_clip()
    classifier = ClipAdapterClassifier(clip, _tokens(2), 1, ClipAdapter(ratio=0.0), 16)
    images = torch.randn(2, 3, 16, 16)
    assert torch.allclose(classifier.image_features(images), clip.encode_image(images))
    classifier.ratio = 1.0
    adapted = classifier.visual_adapter(clip.encode_image(images))
    assert torch.allclose(classifier.image_features(images), adapted)


@pytest.mark.parametrize(("method", "marker"), [("dora", "lora_magnitude_vector"), ("vera", "vera_lambda_b")])
def test_dora_and_vera_train_only_their_tensors(method: str, marker: str) -> None:
    from vlmforge.models.peft.classifier import ClipClassifier, trainable_share
    from vlmforge.models.peft.lora import add_lora

    clip = _tiny_clip()
    add_lora(clip, LoraFamily(method=method, towers=["visual", "text"], rank=2), seed=0)
    trainable = [name for name, p in clip.named_parameters() if p.requires_grad]
    assert any(marker in name for name in trainable)
    assert all(".mlp.c_" in name for name in trainable)  # the default MLP layers only
    classifier = ClipClassifier(clip, _tokens(2), 1)
    classifier(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None for name, p in clip.named_parameters() if name not in trainable)
    assert 0 < trainable_share(classifier)["percent"] < 50
