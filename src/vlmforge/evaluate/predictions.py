"""Predictions for a batch of images, the way evaluation makes them: zero-shot class probabilities
(prompt-ensembled class embeddings, softmax of the model's scaled cosine similarities), greedy captions
(CoCa's decoder, as the captioning task decodes) and greedy answers (LLaVA, as the VQA task answers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlmforge.evaluate.metrics import zero_shot_classifier

MAX_LOGIT_SCALE = 100.0  # open_clip clamps the learned temperature here while training
DEFAULT_ANSWER_TOKENS = 16  # VqaTask.max_new_tokens


@torch.no_grad()
def class_embeddings(
    loaded: Any, classes: Sequence[str], templates: Sequence[str], batch_size: int
) -> torch.Tensor:
    """[dim, classes]: each class's prompts (one per template) embedded, averaged and renormalised."""
    prompts = [template.format(name) for name in classes for template in templates]
    feats = []
    for start in range(0, len(prompts), batch_size):
        tokens = loaded.tokenizer(prompts[start : start + batch_size], loaded.context_length)
        feats.append(loaded.model.encode_text(tokens.to(loaded.device), normalize=True).float())
    return zero_shot_classifier(torch.cat(feats).view(len(classes), len(templates), -1))


def logit_scale(model: Any) -> float:
    """exp(the model's learned log temperature), at most 100 (at most ``model.max_logit_scale`` where
    the model says, e.g. none for transformers' CLIP and SigLIP); 1 for a model without one."""
    scale = getattr(model, "logit_scale", None)
    return (
        1.0 if scale is None else min(float(scale.exp()), getattr(model, "max_logit_scale", MAX_LOGIT_SCALE))
    )


@torch.no_grad()
def class_probabilities(loaded: Any, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """[N, classes] softmax over the classes of the scaled image-class cosine similarities."""
    feats = loaded.model.encode_image(images.to(loaded.device), normalize=True).float()
    return torch.softmax(logit_scale(loaded.model) * feats @ classifier, dim=-1).cpu()


@torch.no_grad()
def greedy_captions(loaded: Any, images: torch.Tensor, max_tokens: int | None) -> list[str]:
    """One greedy caption per image (end token or ``max_tokens``, at most the context length - 1)."""
    from vlmforge.config.schema import CaptioningTask
    from vlmforge.evaluate.captioning import caption_decoding, coca_captions

    task = CaptioningTask(method="greedy", max_length=max_tokens)
    settings = caption_decoding(task, loaded.context_length, "--max-tokens")
    return [
        c.strip() for c in coca_captions(loaded.model, loaded.tokenizer, images.to(loaded.device), settings)
    ]


def with_image(question: str) -> str:
    """The question with LLaVA's ``<image>`` placeholder first, unless it places it itself."""
    from vlmforge.data.conversations import IMAGE

    return question if IMAGE in question else f"{IMAGE}\n{question}"


@torch.no_grad()
def greedy_answers(loaded: Any, images: torch.Tensor, question: str, max_tokens: int | None) -> list[str]:
    """The greedy answer to ``question`` about each image, prompted as the model says (``prompt_ids``: the
    layout of its stage, or a transformers folder's chat template)."""
    from vlmforge.evaluate.vqa import answer

    asked = [with_image(question)] * len(images)
    new = max_tokens or DEFAULT_ANSWER_TOKENS
    found = answer(loaded.model, loaded.tokenizer, asked, list(images), new, prompter=loaded.prompt_ids)
    return [text.strip() for text in found]
