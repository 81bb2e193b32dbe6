"""Greedy answers of a LLaVA model to benchmark questions, each about one image (a file or encoded bytes),
in batches; an image that cannot be read drops its question instead of stopping the benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.data.accounting import Drop
from vlmforge.data.conversations import IMAGE

if TYPE_CHECKING:  # for annotations only: the model handle lives in a layer above
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


@dataclass(frozen=True)
class Asked:
    key: str  # names the item where its image is dropped
    prompt: str  # ``question_prompt``'s layout
    image: ImageSource


def read_image(asked: Asked, source: str) -> Any:
    """The item's image as RGB, or the ``Drop`` that says why it cannot be read (``source``: the
    benchmark file the item comes from)."""
    from vlmforge.data.images import ImageError, decode_rgb

    try:
        return decode_rgb(asked.image)
    except ImageError as exc:  # also a file that cannot be opened
        return Drop(source, asked.key, exc.reason, exc.detail)


def generate_answers(
    model: InferenceModel,
    asked: Sequence[Asked],
    source: str,
    batch_size: int,
    max_new_tokens: int,
    prepare: Prepare | None = None,
) -> list[Answer | Drop]:
    """One greedy answer per item (``evaluate.vqa.answer``), or the ``Drop`` of its unreadable image."""
    from vlmforge.evaluate.vqa import answer

    out: list[Answer | Drop] = []
    for start in range(0, len(asked), batch_size):
        chunk = asked[start : start + batch_size]
        read = [read_image(item, source) for item in chunk]
        batch = [
            (item.prompt, image)
            for item, image in zip(chunk, read, strict=True)
            if not isinstance(image, Drop)
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
        out += [
            image if isinstance(image, Drop) else Answer(next(done).strip(), image.size) for image in read
        ]
    return out
