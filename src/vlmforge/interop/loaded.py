"""What a loaded model is for inference (``InferenceModel``) and the image transform it takes, apart from
the loaders (``vlmforge.interop.inference`` and the per-format readers), which all build it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.evaluation import EVAL_TASKS
from vlmforge.data.base import DEFAULT_PROMPTS

OPEN_CLIP_CONFIG = "open_clip_config.json"  # vlmforge.interop.open_clip_export.CONFIG


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
    source: str  # pretrain run, finetune run, align run, open_clip export
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
