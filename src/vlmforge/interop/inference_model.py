"""What ``vlmforge predict`` and ``vlmforge eval --model`` hold of a loaded model (``InferenceModel``) and
how its images are transformed (``ImageTransform``): below the loaders (``interop.inference`` and the
format readers it calls), so that each of them builds one without importing the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.evaluation import EVAL_TASKS
from vlmforge.data.base import DEFAULT_PROMPTS

OPEN_CLIP_CONFIG = "open_clip_config.json"  # vlmforge.interop.open_clip_export.CONFIG
HF_CONFIG = "config.json"  # a transformers folder (also in every LLaVA run folder, next to recipe.yaml)


@dataclass(frozen=True)
class ImageTransform:
    """Shortest side to ``size`` (bicubic), centre crop, normalise (``data.images.square_tensor``)."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: Any) -> torch.Tensor:
        from vlmforge.data.images import square_tensor

        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return square_tensor(image, self.size, mean, std)


@dataclass
class InferenceModel:
    """What predicting with (or evaluating) a trained model needs."""

    kind: str  # clip, siglip, coca, flava, masked or llava
    source: str  # pretrain run, finetune run, align run, open_clip export, transformers folder
    path: Path
    weights: Path
    model: Any  # torch.nn.Module in eval mode on ``device``
    tokenizer: Any  # a vlmforge TextTokenizer (or one alike); a transformers tokenizer for LLaVA
    transform: ImageTransform
    context_length: int
    device: torch.device
    templates: tuple[str, ...] = DEFAULT_PROMPTS  # zero-shot prompt templates with one '{}'
    classnames: list[str] | None = None  # the classes of the data the run trained on, when known
    prompt_template: str = "chat"  # LLaVA: the prompt layout of the weights' stage
    recipe: Any = None  # the run's training recipe (None for an export)
    prompter: Callable[[str], list[int]] | None = None  # LLaVA: question -> prompt ids (None: vlmforge's)

    def prompt_ids(self, question: str) -> list[int]:
        """LLaVA: the ids the model continues to answer ``question`` (``<image>`` expanded to one
        placeholder per visual token): the folder's chat template for a transformers folder, else
        vlmforge's layout of ``prompt_template`` (``data.conversations.prompt_ids``)."""
        if self.prompter is not None:
            return self.prompter(question)
        from vlmforge.data.conversations import prompt_ids

        config = self.model.config
        image_tokens, image_id = int(config.image_seq_length), int(config.image_token_index)
        return prompt_ids(self.tokenizer, question, self.prompt_template, image_tokens, image_id)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The eval task kinds this model supports (``config.evaluation.EVAL_TASKS``)."""
        return EVAL_TASKS[self.kind]

    @property
    def embeds_text(self) -> bool:
        return "zeroshot" in self.tasks

    @property
    def captions(self) -> bool:
        return "captioning" in self.tasks

    @property
    def answers(self) -> bool:
        return "vqa" in self.tasks
