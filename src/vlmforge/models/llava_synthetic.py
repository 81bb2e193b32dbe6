"""Synthetic training steps of LLaVA-family models for planning: the forward (and, for the planner's
counters, the backward) of a step on made-up inputs of the recipe's shapes, runnable on the meta device.
They count FLOPs and saved activations; they never train."""

from __future__ import annotations

import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.models import llava_anyres
from vlmforge.models.llava import IGNORE_INDEX


def synthetic_loss(
    cfg: LlavaModel,
    model: torch.nn.Module,
    batch_size: int,
    device: str,
    vocab_size: int,
    text_tokens: int | None = None,
    images: int = 1,
) -> torch.Tensor:
    """The next-token loss of ``batch_size`` synthetic samples: ``images`` images then ``text_tokens``
    answer tokens (default ``cfg.max_text_tokens``). The same operations as the model's forward — vision
    encoder, projector, LLM over image + text tokens, LM head, cross-entropy — with the image tokens in
    front instead of scattered into placeholders (a check there cannot run on the meta device)."""
    text_tokens = text_tokens or cfg.max_text_tokens
    llava = model.get_base_model() if hasattr(model, "get_base_model") else model
    side = cfg.vision.image_size
    if cfg.image_layout == "anyres":
        vision = llava_anyres.synthetic_inputs(cfg, batch_size * images, device)
    else:
        vision = {"pixel_values": torch.zeros(batch_size * images, 3, side, side, device=device)}
    text = torch.ones(batch_size, text_tokens, dtype=torch.long, device=device)
    image_out = llava.model.get_image_features(
        **vision,
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy="default",
    )
    embeds = llava.model.get_input_embeddings()(text)
    image_embeds = (
        torch.stack(list(image_out.pooler_output)).to(embeds.dtype).reshape(batch_size, -1, embeds.shape[-1])
    )
    hidden = llava.model.language_model(inputs_embeds=torch.cat([image_embeds, embeds], 1)).last_hidden_state
    logits = llava.lm_head(hidden)
    ignored = torch.full(
        (batch_size, images * cfg.image_tokens), IGNORE_INDEX, dtype=torch.long, device=device
    )
    labels = torch.cat([ignored, text], 1)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def _policy_and_reference(
    cfg: LlavaModel, model: torch.nn.Module, rows: int, device: str, vocab_size: int, text_tokens: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's loss on ``rows`` synthetic sequences (with gradients) and the reference's (without): the
    policy with its LoRA adapters switched off, or the frozen copy in ``model["reference"]``."""
    policy = model["policy"] if isinstance(model, torch.nn.ModuleDict) else model
    loss = synthetic_loss(cfg, policy, rows, device, vocab_size, text_tokens)
    with torch.no_grad():
        if isinstance(model, torch.nn.ModuleDict) and "reference" in model:
            return loss, synthetic_loss(cfg, model["reference"], rows, device, vocab_size, text_tokens)
        with policy.disable_adapter():  # type: ignore[operator]
            return loss, synthetic_loss(cfg, policy, rows, device, vocab_size, text_tokens)


def synthetic_preference_loss(
    cfg: LlavaModel,
    model: torch.nn.Module,
    batch_size: int,
    device: str,
    vocab_size: int,
    text_tokens: int | None = None,
) -> torch.Tensor:
    """One DPO step's forward on ``batch_size`` synthetic pairs: the policy on the chosen and the rejected
    sequences (2 x batch_size, with gradients) and the reference on the same sequences without gradients."""
    loss, reference = _policy_and_reference(cfg, model, 2 * batch_size, device, vocab_size, text_tokens)
    return loss - reference


def synthetic_rloo_loss(
    cfg: LlavaModel,
    model: torch.nn.Module,
    batch_size: int,
    device: str,
    vocab_size: int,
    text_tokens: int | None = None,
    samples_per_prompt: int = 4,
) -> torch.Tensor:
    """One RLOO step's scoring forwards on ``batch_size`` synthetic prompts with k answers each: the policy
    (with gradients), the reference (adapters off) and the frozen reward model ``model["reward"]`` (no
    gradients) on k x batch_size sequences. Sampling the answers (``generate``) is not counted."""
    rows = samples_per_prompt * batch_size
    loss, reference = _policy_and_reference(cfg, model, rows, device, vocab_size, text_tokens)
    with torch.no_grad():
        scored = synthetic_loss(cfg, model["reward"], rows, device, vocab_size, text_tokens)
    return loss - reference - scored
