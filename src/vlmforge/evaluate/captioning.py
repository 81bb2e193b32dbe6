"""Captioning with the project's decoding (greedy / beam search over a CoCa model's text decoder): the
evaluation task, and the captions curation's re-captioning steps ask for."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.schema import CaptioningTask
from vlmforge.data.tokenizers import TextTokenizer
from vlmforge.errors import UserError
from vlmforge.generate import Decoding, SpecialTokens, generate


def caption_decoding(options: Any, context_length: int, where: str) -> Decoding:
    """Decoding settings from a section with method, beam_size, max_length, repetition_penalty,
    no_repeat_ngram and length_penalty (the captioning task, a curation captioner)."""
    limit = context_length - 1  # the start token takes one position
    max_length = options.max_length or limit
    if max_length > limit:
        raise UserError(
            f"{where}: max_length {max_length} is longer than the model's context allows ({limit} tokens)",
            hint=f"set max_length <= {limit} or leave it unset",
        )
    return Decoding(
        options.method,
        options.beam_size if options.method == "beam" else 1,
        max_length,
        options.repetition_penalty,
        options.no_repeat_ngram,
        options.length_penalty,
    )


@torch.no_grad()
def coca_captions(
    model: Any, tokenizer: TextTokenizer, images: torch.Tensor, settings: Decoding
) -> list[str]:
    """One caption per image of a preprocessed batch (on the model's device; the search runs on CPU)."""
    from vlmforge.models.generative import decoder_step

    step = decoder_step(model, images, tokenizer.vocab_size)
    device = images.device

    def on_device(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return step(prefixes.to(device), rows.to(device)).float().cpu()

    special = SpecialTokens(tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id)
    return [tokenizer.decode(ids) for ids in generate(on_device, len(images), special, settings).tokens]


@torch.no_grad()
def captioning(context: Any, task: CaptioningTask) -> dict[str, Any]:
    """Caption every image with the project's decoding and score the captions against all of the image's
    reference captions with the COCO caption evaluation's metrics (``caption_metrics.caption_scores``); every
    image's caption and references are returned under "predictions". Only generative models reach here
    (``config.evaluation.EVAL_TASKS``)."""
    from vlmforge.evaluate.caption_metrics import caption_scores

    data, tokenizer = context.data, context.tokenizer
    settings = caption_decoding(task, context.context_length, "captioning")
    max_length = settings.max_length
    captions: list[str] = []
    for start in range(0, len(data), context.batch_size):
        images = torch.stack(
            [data.image(i) for i in range(start, min(start + context.batch_size, len(data)))]
        )
        captions += coca_captions(context.model, tokenizer, images, settings)
    references = [data.captions_of(i) for i in range(len(data))]
    metrics: dict[str, Any] = caption_scores(captions, references)
    metrics |= {"method": task.method, "max_length": max_length}
    if task.method == "beam":
        metrics["beam_size"] = task.beam_size
    shown = sorted({i * len(data) // task.examples for i in range(task.examples)})  # spread over the data
    metrics["examples"] = [
        {"key": data.key(i), "caption": captions[i], "reference": references[i][0]} for i in shown
    ]
    metrics["predictions"] = [
        {"image": data.key(i), "caption": caption, "references": list(refs)}
        for i, (caption, refs) in enumerate(zip(captions, references, strict=True))
    ]
    return metrics
