"""StableRep's multi-positive contrastive loss and the batches of several images per caption id it trains on:
the loss against a hand computation and the official code, its reduction to CLIP, its split over ranks;
caption ids, the grouped sampler's runs, determinism, resume and ranks; the recipe switches."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import DEBUG_RECIPE
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FolderData
from vlmforge.config.shipped import find_recipe
from vlmforge.data.base import ImageTextSet
from vlmforge.data.folder import folder_set
from vlmforge.data.grouping import GroupedBatchSampler, caption_ids, caption_runs
from vlmforge.data.loader import CaptionedImages, DataPosition, collate
from vlmforge.data.tokenizers import WordVocab
from vlmforge.errors import UserError
from vlmforge.losses import multi_positive_loss


def _loss(image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor, scale: float) -> torch.Tensor:
    return multi_positive_loss(image, text, image, text, torch.tensor(scale), ids, ids)["loss"]


# ----------------------------------------------------------------------------------------- the loss
def test_hand_computed_case() -> None:
    # images i0=(1,0) i1=(0,1) i2=(1,0), captions t0=t1=(1,0) t2=(0,1), ids [0, 0, 1], scale 1.
    # image->text logits: i0 [1,1,0], i1 [0,0,1], i2 [1,1,0]; targets [.5,.5,0], [.5,.5,0], [0,0,1]:
    #   i0: -(.5 log s(1) + .5 log s(1)) with s over [1,1,0]  = ln(2e+1) - 1
    #   i1: -(.5 log s(0) + .5 log s(0)) with s over [0,0,1]  = ln(e+2)
    #   i2: -log s(0) with s over [1,1,0]                      = ln(2e+1)
    # text->image logits: t0 = t1 = [1,0,1] with targets [.5,.5,0] -> ln(2e+1) - 1/2 each; t2 [0,1,0]
    # with target [0,0,1] -> ln(e+2). Both directions sum to 2 ln(2e+1) + ln(e+2) - 1; mean over 3 queries.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([0, 0, 1])
    terms = multi_positive_loss(image, text, image, text, torch.tensor(1.0), ids, ids)
    expected = (2 * math.log(2 * math.e + 1) + math.log(math.e + 2) - 1) / 3  # = 1.4251448
    assert terms["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert terms["positives"].item() == pytest.approx((2 + 2 + 1) / 3)


def test_matches_the_official_image_text_term() -> None:
    # Reference: google-research/syn-rep-learn, StableRep/models/losses.py @ 45f451b0, MultiPosConLossMM,
    # run once in a 1-process gloo group with image_labels = text_labels = IDS, logit_scale 5.0, on these
    # features; its 'img_txt_loss' output is stored here.
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    text = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    ids = torch.tensor([3, 3, 7, 7, 7, 1, 9, 9])
    assert _loss(image, text, ids, 5.0).item() == pytest.approx(4.674503803253174, abs=1e-5)


def _features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image, text = (F.normalize(torch.randn(n, 16, generator=g, dtype=torch.float64), dim=-1) for _ in "it")
    return image.requires_grad_(), text.requires_grad_()


def test_distinct_ids_give_clips_loss() -> None:
    from open_clip.loss import ClipLoss

    image, text = _features(8, seed=1)
    scale = torch.tensor(7.0, dtype=torch.float64)
    clip = ClipLoss()(image, text, scale)
    assert torch.allclose(_loss(image, text, torch.arange(8) * 5, 7.0), clip, atol=1e-10)
    assert not torch.allclose(_loss(image, text, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6]), 7.0), clip)


def test_gradients_match_finite_differences_and_pull_positives_together() -> None:
    image, text = _features(6, seed=2)
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda i, t: _loss(i, t, ids, 3.0), (image, text))
    loss = _loss(image, text, ids, 3.0)
    (grad,) = torch.autograd.grad(loss, [image])
    with torch.no_grad():  # one small step against the gradient lowers the loss
        assert _loss(image - 0.01 * grad, text, ids, 3.0) < loss


def test_two_ranks_with_gathered_ids_equal_one_process() -> None:
    """What DDP with local loss + gather-with-grad computes: each rank scores its half (and its ids) against
    all gathered features and ids; the mean of the ranks' losses and its gradients equal one process's."""
    image, text = _features(8, seed=3)
    ids, scale = torch.tensor([4, 4, 2, 2, 4, 4, 9, 9]), torch.tensor(5.0, dtype=torch.float64)

    def on(rows: slice) -> torch.Tensor:
        return multi_positive_loss(image[rows], text[rows], image, text, scale, ids[rows], ids)["loss"]

    single = on(slice(None))
    ranks = (on(slice(0, 4)) + on(slice(4, 8))) / 2
    assert torch.allclose(single, ranks, atol=1e-12)
    for one, two in zip(
        torch.autograd.grad(single, [image, text]), torch.autograd.grad(ranks, [image, text]), strict=True
    ):
        assert torch.allclose(one, two, atol=1e-12)


# -------------------------------------------------------------------------------------- caption ids
def _set(captions: list[list[str]], keys: list[str] | None = None) -> ImageTextSet:
    return ImageTextSet(
        name="toy",
        keys=[f"k{i}" for i in range(len(captions))],
        captions=captions,
        load_image=lambda i: torch.full((3, 8, 8), float(i)),
        caption_keys=keys,
    )


def test_caption_ids_follow_the_captions_or_the_given_keys() -> None:
    same = [["a one.", "the one."], ["a two."], ["a one.", "the one."], ["a two."], ["a one."]]
    assert caption_ids(_set(same)).tolist() == [0, 1, 0, 1, 2]
    keyed = _set(same, keys=["x", "x", "y", "x", "y"])
    assert caption_ids(keyed).tolist() == [0, 0, 1, 0, 1]
    assert caption_ids(keyed.subset(np.array([4, 2, 0]), "part")).tolist() == [0, 0, 1]


def test_folder_caption_id_column(tmp_path: Path, digits_folder: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(digits_folder / "img000.png", tmp_path / name)
    rows = [("a.png", "one", "s1"), ("b.png", "two", "s1"), ("c.png", "three", "s2")]
    lines = [json.dumps({"image": i, "caption": c, "caption_id": k}) for i, c, k in rows]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    assert caption_ids(folder_set(FolderData(path=tmp_path, image_size=8))).tolist() == [0, 0, 1]
    lines[1] = json.dumps({"image": "b.png", "caption": "two"})
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 2 has no caption_id"):
        folder_set(FolderData(path=tmp_path, image_size=8))


def test_samples_carry_their_caption_id() -> None:
    data = _set([["a one."], ["a two."], ["a one."]])
    dataset = CaptionedImages(
        data, WordVocab.build(data.all_captions()), 8, seed=0, caption_ids=caption_ids(data)
    )
    batch = collate([dataset[(0, 0, i)] for i in range(3)])
    assert batch["caption_id"].tolist() == [0, 1, 0]
    assert (
        "caption_id" not in CaptionedImages(data, WordVocab.build(data.all_captions()), 8, seed=0)[(0, 0, 0)]
    )


# ---------------------------------------------------------------------------------------- batches
IDS = np.repeat(np.arange(7), [9, 8, 8, 5, 4, 3, 1])  # 38 samples; 3 and 1 of the last two cannot fill a run


def _batches(sampler: GroupedBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return [[index for _, _, index in batch] for batch in sampler]


def test_every_micro_batch_holds_whole_runs_of_one_id() -> None:
    runs = caption_runs(IDS, 4, seed=0, epoch=0)
    assert runs.shape == (2 + 2 + 2 + 1 + 1, 4)
    assert all(len(set(IDS[run])) == 1 for run in runs)
    assert len({int(i) for i in runs.reshape(-1)}) == runs.size  # no sample twice
    sampler = GroupedBatchSampler(IDS, 4, global_batch=16, micro_batch=8, seed=0)
    batches = _batches(sampler)
    assert len(batches) == 4 and all(len(b) == 8 for b in batches)  # 2 steps of 2 micro-batches
    for batch in batches:
        assert all(count % 4 == 0 for count in Counter(IDS[batch].tolist()).values())


def test_order_is_a_function_of_seed_and_epoch() -> None:
    def sampler(seed: int) -> GroupedBatchSampler:
        return GroupedBatchSampler(IDS, 4, global_batch=16, micro_batch=8, seed=seed)

    assert _batches(sampler(0)) == _batches(sampler(0))
    assert _batches(sampler(0)) != _batches(sampler(1))
    assert _batches(sampler(0), epoch=0) != _batches(sampler(0), epoch=1)


def test_resume_continues_and_ranks_split_the_global_batch() -> None:
    full = _batches(GroupedBatchSampler(IDS, 4, global_batch=16, micro_batch=8, seed=0), epoch=1)
    resumed = GroupedBatchSampler(IDS, 4, 16, 8, seed=0, resume=DataPosition(1, 1))
    assert _batches(resumed, epoch=1) == full[1:]
    ranks = [_batches(GroupedBatchSampler(IDS, 4, 16, 8, seed=0, rank=r, world_size=2), 1) for r in (0, 1)]
    for step in range(2):  # each optimizer step sees the same 16 samples on one rank or two
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(full[2 * step] + full[2 * step + 1])


def test_sampler_refusals_name_the_fix() -> None:
    with pytest.raises(UserError, match="does not divide the micro-batch of 6"):
        GroupedBatchSampler(IDS, 4, global_batch=12, micro_batch=6)
    with pytest.raises(UserError, match="only 32 samples"):
        GroupedBatchSampler(IDS, 4, global_batch=48, micro_batch=8)


# ----------------------------------------------------------------------------------------- recipes
def test_recipe_switches_validate() -> None:
    recipe = load_recipe("pretrain", find_recipe("debug/clip-multipositive-tiny"))
    assert recipe.model.multi_positive and recipe.data.images_per_caption == 4
    with pytest.raises(UserError, match="multi_positive: true"):
        load_recipe("pretrain", DEBUG_RECIPE, ["data.images_per_caption=4"])
    with pytest.raises(UserError, match="kind: clip"):
        load_recipe("pretrain", find_recipe("debug/siglip-tiny"), ["model.multi_positive=true"])
    with pytest.raises(UserError, match="does not divide the micro-batch of 6"):
        load_recipe(
            "pretrain",
            find_recipe("debug/clip-multipositive-tiny"),
            ["data.batch_size=36", "train.micro_batch_size=6"],
        )
    with pytest.raises(UserError, match="choose one"):
        load_recipe("pretrain", DEBUG_RECIPE, ["model.multi_positive=true", "model.hard_negatives={}"])
