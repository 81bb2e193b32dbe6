"""Model builder and weight loading (weights_only, strict)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.models.contrastive import build_model, image_size, load_checkpoint_weights


def _tiny_cfg(*overrides: str):
    return load_recipe("pretrain", find_recipe("debug/clip-tiny"), list(overrides)).model


def test_custom_towers_have_requested_shapes() -> None:
    model = build_model(_tiny_cfg(), vocab_size=40)
    image_features, text_features, _ = model(torch.zeros(2, 3, 16, 16), torch.ones(2, 16, dtype=torch.long))
    assert image_features.shape == text_features.shape == (2, 32)
    assert model.token_embedding.num_embeddings == 40
    assert image_size(_tiny_cfg(), model) == 16


def test_pretrained_weights_load_from_saved_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model(_tiny_cfg(), vocab_size=40)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = build_model(_tiny_cfg(f"model.pretrained={path}"), vocab_size=40)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_pretrained_mismatch_and_pickles_are_refused(tmp_path: Path) -> None:
    small = build_model(_tiny_cfg(), vocab_size=40)
    path = tmp_path / "other.pt"
    torch.save(build_model(_tiny_cfg("model.embed_dim=16"), vocab_size=40).state_dict(), path)
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint_weights(small, path)

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    pickled = tmp_path / "pickle.pt"
    torch.save({"state_dict": Payload()}, pickled)
    with pytest.raises(UserError, match="weights-only"):
        load_checkpoint_weights(small, pickled)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint_weights(small, tmp_path / "absent.pt")


def test_flip_unmasked_tuning_switches_off_patch_dropout_at_the_right_step() -> None:
    from types import SimpleNamespace

    from vlmforge.training.contrastive import ContrastiveModule

    recipe = load_recipe("pretrain", find_recipe("debug/flip-tiny"))
    module = ContrastiveModule(recipe, vocab_size=40)
    dropout = module.model.visual.patch_dropout
    tuning_starts = recipe.train.max_steps - recipe.model.unmasked_tuning_steps
    module._trainer = SimpleNamespace(global_step=tuning_starts - 1)
    module.on_train_batch_start(None, 0)
    assert dropout.prob == pytest.approx(0.5)
    module._trainer = SimpleNamespace(global_step=tuning_starts)
    module.on_train_batch_start(None, 0)
    assert dropout.prob == 0.0


def test_activation_checkpointing_recomputes_blocks_saves_memory_and_keeps_gradients() -> None:
    """train.activation_checkpointing reaches both towers of the training module; backward then keeps
    fewer activations and gives the same gradients."""
    from vlmforge.models.contrastive import synthetic_loss
    from vlmforge.planning.memory import SavedBytes
    from vlmforge.training.contrastive import ContrastiveModule

    def step(*overrides: str) -> tuple[torch.nn.Module, int, dict[str, torch.Tensor]]:
        recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"), list(overrides))
        torch.manual_seed(0)
        model = ContrastiveModule(recipe, 40).model
        torch.manual_seed(1)
        with SavedBytes() as saved:
            loss = synthetic_loss(recipe.model, model, 8, "cpu", 40)
        loss.backward()
        return model, saved.bytes, {name: p.grad for name, p in model.named_parameters()}

    plain, plain_bytes, plain_grads = step()
    checkpointed, checkpointed_bytes, checkpointed_grads = step("train.activation_checkpointing=true")
    assert not plain.visual.transformer.grad_checkpointing and not plain.transformer.grad_checkpointing
    assert checkpointed.visual.transformer.grad_checkpointing and checkpointed.transformer.grad_checkpointing
    assert checkpointed_bytes < 0.8 * plain_bytes
    for name, grad in plain_grads.items():
        other = checkpointed_grads[name]
        assert (grad is None) == (other is None), name
        assert grad is None or torch.allclose(other, grad, atol=1e-6), name
