"""Greedy answers of a LLaVA model to benchmark questions, each about one image (a file or encoded bytes),
in batches; an image that cannot be read drops its question instead of stopping the benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.data.conversations import IMAGE
from vlmforge.interop.inference_model import InferenceModel

ImageSource = Path | bytes  # a file, or an image encoded in the benchmark's own file (MMBench's base64)
Prepare = Callable[[Any], Any]  # PIL image -> PIL image, before the model's transform


@dataclass(frozen=True)
class Answer:
    text: str
    size: tuple[int, int]  # (width, height) of the image as read, before any preparation


def question_prompt(question: str, suffix: str) -> str:
    """LLaVA-1.5's layout of a benchmark question: the image first, then the question, then the
    instruction line (``model_vqa_loader.py``: ``<image>\\n`` + question + ``\\n`` + suffix)."""
    return f"{IMAGE}\n{question}" + (f"\n{suffix}" if suffix else "")


def read_image(source: ImageSource) -> Any | None:
    """The image as RGB, or None when it is missing or cannot be decoded."""
    from vlmforge.data.images import ImageError, decode_rgb

    try:
        return decode_rgb(source)
    except ImageError:
        return None


def generate_answers(
    model: InferenceModel,
    prompts: Sequence[str],
    images: Sequence[ImageSource],
    batch_size: int,
    max_new_tokens: int,
    prepare: Prepare | None = None,
) -> list[Answer | None]:
    """One greedy answer per prompt (``evaluate.vqa.answer``), None where the image is unreadable."""
    from vlmforge.evaluate.vqa import answer

    answers: list[Answer | None] = []
    for start in range(0, len(prompts), batch_size):
        read = [read_image(source) for source in images[start : start + batch_size]]
        batch = [
            (prompt, image) for prompt, image in zip(prompts[start:], read, strict=False) if image is not None
        ]
        texts = (
            answer(
                model.model,
                model.tokenizer,
                [prompt for prompt, _ in batch],
                [model.transform(prepare(image) if prepare else image) for _, image in batch],
                max_new_tokens,
                prompter=model.prompt_ids,
            )
            if batch
            else []
        )
        done = iter(texts)
        answers += [None if image is None else Answer(next(done).strip(), image.size) for image in read]
    return answers
