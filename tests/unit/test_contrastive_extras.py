"""NegCLIP hard negatives, the SLIP self-supervised term and the compositional evaluation: the pure functions,
their split-over-ranks equivalence, and one CLI run of each debug recipe (2-process DDP run marked)."""

from __future__ import annotations

import re
from typing import get_args

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import DEBUG_RECIPE
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import Perturbation, SslConfig
from vlmforge.config.shipped import find_recipe
from vlmforge.data.base import ImageTextSet
from vlmforge.data.loader import CaptionedImages, collate
from vlmforge.data.perturb import PERTURBATIONS, HardNegativeCaptions, hard_negative, perturb
from vlmforge.data.tokenizers import WordVocab
from vlmforge.errors import UserError
from vlmforge.evaluate.metrics import compositional_accuracy
from vlmforge.evaluate.tasks import EvalContext, compositional
from vlmforge.losses import negclip_loss, nt_xent_loss
from vlmforge.training.augment import augment, view_params

CAPTIONS = [
    "a photo of the digit five.",
    "a red cube left of a blue sphere, on a wooden table.",
    "A dog chasing a cat",
    "the number seven",
]


def words(text: str) -> list[str]:
    return sorted(w.lower() for w in text.replace(",", " ").replace(".", " ").split())


# ------------------------------------------------------------------------------------- perturbations
@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_perturbations_reorder_the_same_words(kind: str) -> None:
    applied = 0
    for caption in CAPTIONS:
        out = perturb(caption, kind, np.random.default_rng(0))
        assert out == perturb(caption, kind, np.random.default_rng(0))  # deterministic for a seed
        if out is None:
            continue
        applied += 1
        assert out != caption
        assert words(out) == words(caption)  # a bag of words cannot tell them apart
        assert re.sub(r"\w+", "", out) == re.sub(r"\w+", "", caption)  # punctuation and spaces stay
    assert applied >= 1
    assert perturb("five", kind, np.random.default_rng(0)) is None
    assert perturb("go go", kind, np.random.default_rng(0)) is None


def test_swaps_follow_content_and_attribute_words() -> None:
    rng = np.random.default_rng(0)
    assert perturb("A dog chasing a cat", "swap_attributes", rng) is None
    swapped = perturb("a red cube and a blue ball", "swap_attributes", rng)
    assert swapped == "a blue cube and a red ball"
    assert perturb("a dog chasing a cat", "swap_words", rng) in {
        "a chasing dog a cat",
        "a cat chasing a dog",
        "a dog cat a chasing",
    }
    assert perturb("a big cube", "swap_attributes", rng, frozenset({"big", "cube"})) == "a cube big"
    assert set(get_args(Perturbation)) == set(PERTURBATIONS)


def test_hard_negative_draws_among_what_applies() -> None:
    kinds = sorted(PERTURBATIONS)
    caption = CAPTIONS[1]
    draws = {hard_negative(caption, kinds, np.random.default_rng([0, epoch])) for epoch in range(20)}
    assert len(draws) > 3 and caption not in draws  # new negatives across epochs, never the caption
    assert hard_negative(caption, kinds, np.random.default_rng(5)) == hard_negative(
        caption, kinds, np.random.default_rng(5)
    )
    assert hard_negative("five", kinds, np.random.default_rng(0)) == ""  # nothing to reorder


def _small_set(n: int = 6) -> ImageTextSet:
    images = torch.randn(n, 3, 8, 8)
    return ImageTextSet(
        name="small",
        keys=[str(i) for i in range(n)],
        captions=[[CAPTIONS[i % 3], CAPTIONS[(i + 1) % 3]] for i in range(n)],
        load_image=images.__getitem__,
        labels=np.arange(n) % 2,
        classnames=["even", "odd"],
    )


def test_dataset_adds_a_tokenised_negative_per_sample_and_epoch() -> None:
    data = _small_set()
    vocab = WordVocab.build(data.all_captions())
    base = CaptionedImages(data, vocab, 24, seed=3)
    negatives = HardNegativeCaptions(base, sorted(PERTURBATIONS), frozenset({"red", "blue", "wooden"}))
    keys = [(epoch, 0, i) for epoch in (0, 1) for i in range(len(data))]
    items = [negatives[k] for k in keys]
    for key, item in zip(keys, items, strict=True):
        text, negative = vocab.decode(item["text"].tolist()), vocab.decode(item["negative_text"].tolist())
        assert text == vocab.decode(vocab([base.caption(key[0], key[2])], 24)[0].tolist())
        assert negative != text and sorted(negative.split()) == sorted(text.split())
        assert torch.equal(negatives[key]["negative_text"], item["negative_text"])  # same key, same negative
    first, second = items[:6], items[6:]  # epochs 0 and 1
    assert any(
        not torch.equal(a["negative_text"], b["negative_text"]) for a, b in zip(first, second, strict=True)
    )
    batch = collate(items[:4])
    assert batch["negative_text"].shape == batch["text"].shape == (4, 24)


# ----------------------------------------------------------------------------------------- losses
def _features(n: int, d: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_() for _ in range(3)]


def test_negclip_loss_is_clip_plus_the_negatives_term() -> None:
    from open_clip.loss import ClipLoss

    image, text, negative = _features(8)
    scale = torch.tensor(10.0)
    terms = negclip_loss(image, text, image, text, negative, scale, torch.arange(8))
    clip = ClipLoss()(image, text, scale)
    assert terms["loss"] >= clip
    assert terms["hard_negative"] > 0
    assert torch.allclose(terms["contrastive"] - terms["hard_negative"], clip, atol=1e-6)
    far = negclip_loss(image, text, image, text, -image, scale, torch.arange(8))
    same = negclip_loss(image, text, image, text, text, scale, torch.arange(8))
    assert far["hard_negative_acc"] == 1.0 and same["hard_negative_acc"] == 0.0  # a tie is not a win
    assert far["hard_negative"] < same["hard_negative"]


def test_nt_xent_prefers_matching_views_and_matches_its_formula() -> None:
    view1, view2, other = _features(6, seed=1)
    labels = torch.arange(6)
    identical = nt_xent_loss(view1, view1, view1, view1, labels, 0.1)
    unrelated = nt_xent_loss(view1, other, view1, other, labels, 0.1)
    assert identical < unrelated
    # eq. 1 of SimCLR written out: mean over the 2N anchors of -log softmax at the other view
    z = torch.cat([view1, view2])
    total = 0.0
    for a in range(12):
        sims = torch.stack([z[a] @ z[k] / 0.1 for k in range(12) if k != a])
        positive = z[a] @ z[(a + 6) % 12] / 0.1
        total += -(positive - torch.logsumexp(sims, 0))
    assert torch.allclose(nt_xent_loss(view1, view2, view1, view2, labels, 0.1), total / 12, atol=1e-5)


@pytest.mark.parametrize("loss", ["negclip", "ssl"])
def test_local_loss_on_two_ranks_equals_one_process(loss: str) -> None:
    """What DDP with local loss + gather-with-grad computes: each rank scores its half against all features;
    the mean of the two ranks' losses and its gradients equal the single-process ones."""
    a, b, c = _features(8, seed=2)

    def on(queries: slice, labels: torch.Tensor) -> torch.Tensor:
        if loss == "negclip":
            return negclip_loss(a[queries], b[queries], a, b, c, torch.tensor(5.0), labels)["loss"]
        return nt_xent_loss(a[queries], b[queries], a, b, labels, 0.2)

    single = on(slice(None), torch.arange(8))
    single_grads = torch.autograd.grad(single, [a, b, c], allow_unused=True)
    ranks = (on(slice(0, 4), torch.arange(4)) + on(slice(4, 8), torch.arange(4) + 4)) / 2
    rank_grads = torch.autograd.grad(ranks, [a, b, c], allow_unused=True)
    assert torch.allclose(single, ranks, atol=1e-6)
    for one, two in zip(single_grads, rank_grads, strict=True):
        assert (one is None and two is None) or torch.allclose(one, two, atol=1e-6)


# ------------------------------------------------------------------------------------ augmentation
def test_views_are_per_sample_and_identity_parameters_keep_the_image() -> None:
    cfg = SslConfig(crop_scale=(0.3, 0.9))
    together = view_params(cfg, seed=0, epoch=1, indices=[5, 3, 9], view=0)
    alone = view_params(cfg, seed=0, epoch=1, indices=[3], view=0)
    assert torch.equal(together[1], alone[0])  # a sample's view does not depend on its batch (or rank)
    assert not torch.equal(together, view_params(cfg, seed=0, epoch=1, indices=[5, 3, 9], view=1))
    assert ((together[:, 0] * together[:, 1]) <= 0.9 + 1e-6).all()

    images = torch.rand(2, 3, 12, 12) * 2 - 1
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    keep = torch.tensor([[1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 0.0]] * 2)
    assert torch.allclose(augment(images, keep, mean, std), images, atol=1e-5)
    flip = keep.clone()
    flip[:, 4] = -1
    assert torch.allclose(augment(images, flip, mean, std), images.flip(3), atol=1e-5)
    gray = keep.clone()
    gray[:, 8] = 1
    out = augment(images, gray, mean, std)
    assert torch.allclose(out[:, 0], out[:, 1]) and not torch.allclose(out, images)


# ------------------------------------------------------------------------------------ config + eval
def test_recipe_switches_validate() -> None:
    recipe = load_recipe("pretrain", find_recipe("debug/negclip-tiny"))
    assert recipe.model.hard_negatives is not None
    assert load_recipe("pretrain", find_recipe("debug/slip-tiny")).model.ssl is not None
    with pytest.raises(UserError, match="kind: clip"):
        load_recipe("pretrain", find_recipe("debug/siglip-tiny"), ["model.hard_negatives={}"])
    with pytest.raises(UserError, match="crop_scale"):
        load_recipe("pretrain", DEBUG_RECIPE, ["model.ssl={crop_scale: [0.9, 0.2]}"])
    with pytest.raises(UserError, match="perturbations"):
        load_recipe("pretrain", DEBUG_RECIPE, ["model.hard_negatives={perturbations: [reverse]}"])


def test_compositional_accuracy_counts_ties_as_misses() -> None:
    caption = torch.tensor([0.9, 0.5, 0.7])
    perturbed = torch.tensor([[0.1, 0.2], [0.6, 0.1], [0.7, float("-inf")]])
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    out = compositional_accuracy(caption, perturbed, valid, ["a", "b"])
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["accuracy_a"] == pytest.approx(1 / 3) and out["accuracy_b"] == 1.0
    assert out["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3) and out["images"] == 3


class BagOfWords(torch.nn.Module):
    """A text encoder blind to word order (the mean of word embeddings): every reordering ties."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 8)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        tokens = tokens.sort(dim=1).values  # the same sum in the same order: exact ties
        mask = (tokens > 0).float()[..., None]
        return F.normalize((self.embed(tokens) * mask).sum(1) / mask.sum(1), dim=-1)


def test_compositional_eval_gives_a_bag_of_words_model_zero() -> None:
    from vlmforge.config.schema import CompositionalTask

    data = _small_set()
    vocab = WordVocab.build(data.all_captions())
    model = BagOfWords(vocab.vocab_size)
    image_features = F.normalize(torch.randn(len(data), 8), dim=-1)
    context = EvalContext(model, vocab, 24, data, batch_size=4, image_features=image_features)
    out = compositional(context, CompositionalTask())
    assert out["accuracy"] == 0.0 and out["images"] == len(data)
    assert 0 < out["chance"] < 0.5 and "accuracy_swap_attributes" in out
    with pytest.raises(UserError, match="none of"):
        compositional(context, CompositionalTask(perturbations=["swap_attributes"], attributes=["pink"]))
