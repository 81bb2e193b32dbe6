"""Masked family: masking and losses as pure functions, the model on open_clip towers, planning, CLI runs."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from open_clip.loss import ClipLoss

from vlmforge.config.load import dump_recipe, load_recipe, read_yaml
from vlmforge.config.schema import PretrainRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.masking import (
    IGNORE,
    mim_loss,
    mlm_candidates,
    mlm_corrupt,
    mlm_loss,
    patchify,
    random_patch_mask,
)
from vlmforge.models.masked import build_model, objective_terms, synthetic_loss
from vlmforge.planning.flops import StepCount, count_on_meta

VOCAB = 40


def _cfg(recipe: str, *overrides: str):
    return load_recipe("pretrain", find_recipe(recipe), list(overrides)).model


def _batch(batch: int = 4, ctx: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and captions in the tokenizer layout: start=1, words, end=VOCAB-1, padding 0."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, 16, 16, generator=generator)
    text = torch.randint(3, VOCAB - 1, (batch, ctx), generator=generator)
    text[:, 0], text[:, 7], text[:, 8:] = 1, VOCAB - 1, 0
    return image, text


# ------------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize(("patches", "ratio", "visible"), [(64, 0.75, 16), (16, 0.75, 4), (49, 0.5, 24)])
def test_patch_mask_honours_the_ratio(patches: int, ratio: float, visible: int) -> None:
    torch.manual_seed(0)
    keep, mask = random_patch_mask(32, patches, ratio)
    assert keep.shape == (32, visible) and mask.shape == (32, patches)
    assert (mask.sum(dim=1) == patches - visible).all()
    assert (keep.diff(dim=1) > 0).all()  # distinct, in raster order
    assert not mask.gather(1, keep).any()  # the kept patches are exactly the unmasked ones
    assert len({tuple(row.tolist()) for row in keep}) > 1  # each sample draws its own mask


def test_patchify_follows_the_patch_embedding_order() -> None:
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    row, col = 1, 2  # patch 5 in raster order of a 2 x 3 grid
    expected = images[:, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(patches[:, row * 3 + col], expected)


def test_mim_loss_counts_masked_patches_only() -> None:
    torch.manual_seed(0)
    predicted, target = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    mask = torch.tensor([[True, False, True, False, False, False], [False] * 5 + [True]])
    loss = mim_loss(predicted, target, mask, norm_pix=False)
    squared = (predicted - target).pow(2).mean(dim=-1)
    assert loss == pytest.approx(float((squared[0, 0] + squared[0, 2] + squared[1, 5]) / 3))
    changed_visible = predicted.clone()
    changed_visible[~mask] += 10.0
    assert mim_loss(changed_visible, target, mask, norm_pix=False) == pytest.approx(float(loss))
    changed_masked = predicted.clone()
    changed_masked[mask] += 10.0
    assert mim_loss(changed_masked, target, mask, norm_pix=False) > loss + 1


def test_norm_pix_targets_are_per_patch_standardised() -> None:
    torch.manual_seed(0)
    target = torch.randn(2, 6, 48) * 3 + 5
    normalised = (target - target.mean(-1, keepdim=True)) / target.var(-1, keepdim=True).sqrt()
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert mim_loss(normalised, target, mask, norm_pix=True) == pytest.approx(0.0, abs=1e-5)
    assert mim_loss(target, target, mask, norm_pix=True) > 1


def test_mlm_candidates_skip_start_end_and_padding() -> None:
    text = torch.tensor([[1, 5, 6, 39, 0, 0], [1, 7, 39, 0, 0, 0]])
    assert mlm_candidates(text, end_id=39).tolist() == [
        [False, True, True, False, False, False],
        [False, True, False, False, False, False],
    ]


def test_mlm_corruption_is_bert_80_10_10() -> None:
    torch.manual_seed(0)
    vocab, n = 1000, 400_000
    tokens = torch.randint(1, vocab - 1, (n // 100, 100))
    candidates = torch.rand(tokens.shape) < 0.5
    inputs, labels = mlm_corrupt(tokens, candidates, mask_id=vocab, random_ids=(1, vocab - 1), ratio=0.15)
    chosen = labels != IGNORE
    assert not chosen[~candidates].any() and torch.equal(inputs[~chosen], tokens[~chosen])
    assert torch.equal(labels[chosen], tokens[chosen])
    count = int(candidates.sum())
    # binomial proportions, each within 5 standard deviations
    assert abs(chosen.sum() / count - 0.15) < 5 * math.sqrt(0.15 * 0.85 / count)
    picked = int(chosen.sum())
    masked = (inputs[chosen] == vocab).float().mean()
    kept = (inputs[chosen] == tokens[chosen]).float().mean()
    randomised = 1 - masked - kept
    for share, expected in ((masked, 0.8), (randomised, 0.1 * (1 - 1 / 998)), (kept, 0.1 + 0.1 / 998)):
        assert abs(float(share) - expected) < 5 * math.sqrt(expected * (1 - expected) / picked)


def test_mlm_loss_is_cross_entropy_on_chosen_positions_only() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), IGNORE)
    labels[0, 1], labels[1, 3] = 4, 7
    chosen = torch.stack([logits[0, 1], logits[1, 3]])
    expected = torch.nn.functional.cross_entropy(chosen, torch.tensor([4, 7]))
    assert mlm_loss(logits, labels) == pytest.approx(float(expected))
    other = logits.clone()
    other[labels == IGNORE] = torch.randn(8, 11) * 5
    assert mlm_loss(other, labels) == pytest.approx(float(expected))
    assert mlm_loss(logits, torch.full((2, 5), IGNORE)) == 0.0


# ------------------------------------------------------------------------------------------- model
def test_visible_patch_encoder_matches_open_clips_forward() -> None:
    """With every patch visible, our MAE encoder path is open_clip's encode_image exactly."""
    for recipe in ("debug/mae-tiny", "debug/flava-tiny"):
        model = build_model(_cfg(recipe), VOCAB).eval()
        image, _ = _batch()
        every = torch.arange(model.num_patches).expand(image.shape[0], -1)
        pooled, tokens = model.encode_visible(image, every)
        assert torch.allclose(pooled, model.encode_image(image), atol=1e-5)
        assert tokens.shape[1] == model.num_patches


def test_mae_model_has_no_text_tower_and_unprojected_features() -> None:
    model = build_model(_cfg("debug/mae-tiny"), VOCAB)
    assert model.text is None and model.mlm_head is None and model.logit_scale is None
    assert model.encode_image(_batch()[0]).shape == (4, 32)  # the encoder width
    with pytest.raises(UserError, match="linear_probe"):
        model.encode_text(_batch()[1])


@pytest.mark.parametrize("recipe", ["debug/mae-tiny", "debug/flava-tiny"])
def test_every_parameter_learns_from_the_objective(recipe: str) -> None:
    """No parameter is left without gradient (DDP would stall on it); terms are named and finite."""
    cfg = _cfg(recipe)
    model = build_model(cfg, VOCAB)
    terms = objective_terms(model, cfg, *_batch(), ClipLoss())
    terms["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    expected = {"mim", "loss"} if recipe == "debug/mae-tiny" else {"mim", "mlm", "contrastive", "loss"}
    assert set(terms) == expected and all(torch.isfinite(v) for v in terms.values())
    weights = {
        name: getattr(cfg, name).weight for name in ("mim", "mlm", "contrastive") if getattr(cfg, name, None)
    }
    weighted = sum(weights[k] * terms[k].detach() for k in expected - {"loss"})
    assert terms["loss"].item() == pytest.approx(float(weighted))
    if model.text is not None:
        assert model.text.token_embedding.num_embeddings == VOCAB + 1  # the MLM mask token


def test_grad_checkpointing_reaches_every_transformer_and_keeps_the_gradients() -> None:
    cfg = _cfg("debug/flava-tiny")
    model = build_model(cfg, VOCAB)

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        torch.manual_seed(0)  # the same masks and MLM corruption
        objective_terms(model, cfg, *_batch(), ClipLoss())["loss"].backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients(False)
    checkpointed = gradients(True)
    assert model.visual.transformer.grad_checkpointing and model.text.transformer.grad_checkpointing
    assert model.decoder.transformer.grad_checkpointing
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6), name


def test_objective_switches_are_validated() -> None:
    with pytest.raises(UserError, match="mim"):
        _cfg("debug/mae-tiny", "model.mim=null")
    with pytest.raises(UserError, match="visible"):
        _cfg("debug/flava-tiny", "model.mim=null", "model.contrastive.image_input=visible")
    with pytest.raises(UserError, match="text"):
        _cfg("debug/mae-tiny", "model.mlm.weight=1.0")  # MLM needs a text tower
    with pytest.raises(UserError, match="zeroshot"):
        load_recipe("pretrain", find_recipe("debug/mae-tiny"), ["eval=[{kind: zeroshot}]"])
    data = read_yaml(find_recipe("debug/mae-tiny"))
    del data["eval"]
    default = PretrainRecipe.model_validate(data)
    assert [t.kind for t in default.eval] == ["linear_probe"]  # the default for a model without text
    resolved = yaml.safe_load(dump_recipe(default))  # what a run directory's recipe.yaml holds
    assert [t["kind"] for t in resolved["eval"]] == ["linear_probe"]
    with pytest.raises(UserError, match="ViT-B-16-SigLIP"):  # a timm tower: no patch-level access
        _cfg("debug/mae-tiny", "model.vision=null", "model.arch=ViT-B-16-SigLIP")


# -------------------------------------------------------------------------------------------- plan
def model_flops_per_sample(cfg: object, vocab: int) -> StepCount:
    """One sample through the model's planning loss, forward and backward, on the meta device."""
    return count_on_meta(
        lambda: build_model(cfg, vocab, device="meta"), lambda m: synthetic_loss(cfg, m, 1, "meta", vocab)
    )


def _planned(*overrides: str):
    sizes = [
        "model.vision={image_size: 64, patch_size: 8, width: 256, layers: 4, head_width: 64}",
        "model.mim.decoder={width: 128, layers: 2, heads: 4}",
        "data.image_size=64",
    ]
    return _cfg("debug/mae-tiny", *sizes, *overrides)


def _block_forward_flops(tokens: int, width: int) -> int:
    """A transformer block, forward: QKV + out projections 8·T·d², MLP (ratio 4) 16·T·d², attention 4·T²·d."""
    return 24 * tokens * width**2 + 4 * tokens**2 * width


def test_probe_counts_the_encoder_on_visible_patches_plus_the_decoder() -> None:
    patches, visible, pixels = 64, 16, 8 * 8 * 3
    counted = model_flops_per_sample(_planned("model.mim.mask_ratio=0.75"), VOCAB).forward
    expected = (
        4 * _block_forward_flops(visible + 1, 256)  # encoder: visible patches + class token
        + 2 * _block_forward_flops(patches, 128)  # decoder: every patch
        + 2 * patches * pixels * 256  # patch embedding (all patches, then masked)
        + 2 * visible * 256 * 128  # decoder embedding of the visible tokens
        + 2 * patches * 128 * pixels  # pixel head
    )
    assert counted == pytest.approx(expected, rel=0.05)


def test_flops_drop_with_the_mask_ratio() -> None:
    ratios = (0.25, 0.5, 0.75)
    flops = [model_flops_per_sample(_planned(f"model.mim.mask_ratio={r}"), VOCAB).train for r in ratios]
    assert flops[0] > flops[1] > flops[2]
    joint = _cfg("debug/flava-tiny")
    full = model_flops_per_sample(joint, VOCAB).train
    reuse = joint.contrastive.model_copy(update={"image_input": "visible"})
    visible = model_flops_per_sample(joint.model_copy(update={"contrastive": reuse}), VOCAB).train
    assert visible < full  # the contrastive image feature reuses the MIM encoder pass


def test_plan_uses_the_masked_prior() -> None:
    from vlmforge.planning.phases import phase_cost, phases
    from vlmforge.planning.prior import load_time_model
    from vlmforge.planning.utilisation import utilisation
    from vlmforge.verbs import plan

    recipe = load_recipe("pretrain", find_recipe("masked/flava-vit-b-16"))
    result = plan.run(recipe, ["a100-80gb"], [8])
    (cost,) = [phase_cost(phase) for phase in phases(recipe)]  # one phase: its own parameters
    expected = utilisation(load_time_model(), cost.trainable_params + cost.frozen_params)
    assert result.family == "masked" and result.mfu == pytest.approx(expected)
    assert result.rows[0].fits


# ---------------------------------------------------------------------------------------- linear probe
def test_linear_probe_scores_the_contrastive_family_too() -> None:
    from vlmforge.config.schema import LinearProbeTask
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.models.contrastive import build_model as build_clip

    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    train, val = train_val_split(recipe.data)
    tokenizer = build_tokenizer(recipe.model.tokenizer, train.all_captions())
    model = build_clip(recipe.model, tokenizer.vocab_size)
    task = LinearProbeTask(max_train_samples=500)
    metrics = evaluate_model(recipe.model, model, tokenizer, 16, val, [task], train_data=train)
    probe = metrics["linear_probe"]
    assert probe["train_samples"] == 500 and probe["classes"] == 10 and probe["samples"] == len(val)
    assert 0.2 < probe["top1"] <= 1.0  # random features already beat chance (0.1) on digits
    with pytest.raises(UserError, match="training split"):
        evaluate_model(recipe.model, model, tokenizer, 16, val, [task])
