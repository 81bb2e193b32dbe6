"""The classifier each trained method builds around a starting CLIP (the linear probe trains no module)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmforge.config.peft import ClipAdapter, CoOp, FullFinetune, LoraFamily, TrainedMethod, Vpt
from vlmforge.errors import UserError
from vlmforge.models.peft.classifier import ClipClassifier, freeze, prompt_texts


def zero_shot_classifier(
    clip: nn.Module, tokenizer: Any, classnames: list[str], templates: list[str], context_length: int
) -> ClipClassifier:
    """The untuned model over the class prompts (everything frozen)."""
    freeze(clip)
    tokens = tokenizer(prompt_texts(classnames, templates), context_length)
    return ClipClassifier(clip, tokens, len(templates))


def method_classifier(
    cfg: TrainedMethod,
    clip: nn.Module,
    tokenizer: Any,
    classnames: list[str],
    templates: list[str],
    context_length: int,
    seed: int,
) -> ClipClassifier:
    """``clip`` (changed in place) wrapped by the method; only the method's parameters train."""
    torch.manual_seed(seed)
    device = next(clip.parameters()).device  # the meta device when the planner counts the method
    tokens = tokenizer(prompt_texts(classnames, templates), context_length).to(device)
    if isinstance(cfg, FullFinetune):
        from vlmforge.models.peft.wise_ft import FullFinetuneClassifier

        return FullFinetuneClassifier(clip, tokens, len(templates))
    if isinstance(cfg, LoraFamily):
        from vlmforge.models.peft.lora import add_lora

        add_lora(clip, cfg, seed)
        return ClipClassifier(clip, tokens, len(templates))
    if isinstance(cfg, ClipAdapter):
        from vlmforge.models.peft.clip_adapter import ClipAdapterClassifier

        with torch.no_grad():
            width = clip.encode_text(tokens[:1]).shape[-1]
        return ClipAdapterClassifier(clip, tokens, len(templates), cfg, width)
    if isinstance(cfg, Vpt):
        from vlmforge.models.peft.vpt import VptClassifier

        return VptClassifier(clip, tokens, len(templates), cfg)
    assert isinstance(cfg, CoOp)
    return _coop(cfg, clip, tokenizer, classnames, context_length, device)


def _coop(
    cfg: CoOp,
    clip: nn.Module,
    tokenizer: Any,
    classnames: list[str],
    context_length: int,
    device: torch.device,
) -> ClipClassifier:
    from vlmforge.models.peft.coop import CoOpClassifier, check_room, check_text_tower, coop_prompts

    check_text_tower(clip)
    tokens = tokenizer(coop_prompts(classnames, cfg.context_tokens), context_length)
    check_room(tokens, cfg.context_tokens)
    init = None
    if cfg.init is not None:
        init = tokenizer([cfg.init], context_length)
        words = int(init[0].argmax()) - 1  # tokens between the start and end tokens
        if words != cfg.context_tokens:
            raise UserError(
                f"method.init {cfg.init!r} is {words} tokens, method.context_tokens {cfg.context_tokens}",
                hint=f"set method.context_tokens={words}",
            )
    return CoOpClassifier(clip, tokens.to(device), cfg, None if init is None else init.to(device))
