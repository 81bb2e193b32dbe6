"""A set of conversations about images, the form every conversation source (LLaVA JSON, digits,
referring expressions) takes, and the JSON list those files hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.data.base import ImageTextSet
from vlmforge.errors import UserError

IMAGE = "<image>"
Turn = tuple[str, str]  # (role: "human" | "gpt", text)


@dataclass
class ConversationSet:
    """Conversations, each about at most one image of ``images`` (same global indices)."""

    images: ImageTextSet  # keys, lazy image loading, labels, subsets
    conversations: list[list[Turn]]
    has_image: np.ndarray  # bool per global index

    def __len__(self) -> int:
        return len(self.images)

    @property
    def name(self) -> str:
        return self.images.name

    def global_index(self, i: int) -> int:
        return int(self.images.indices[i])

    def turns(self, i: int) -> list[Turn]:
        return self.conversations[self.global_index(i)]

    def image(self, i: int) -> torch.Tensor | None:
        return self.images.image(i) if self.has_image[self.global_index(i)] else None

    def subset(self, indices: np.ndarray, suffix: str) -> ConversationSet:
        return ConversationSet(self.images.subset(indices, suffix), self.conversations, self.has_image)

    def texts(self) -> list[str]:
        return [text.replace(IMAGE, " ") for i in range(len(self)) for _, text in self.turns(i)]


def read_json_list(path: Path, what: str, hint: str) -> list[Any]:
    """The non-empty JSON list in ``path`` (of ``what``, e.g. "conversation"), or an error naming the file."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}", hint=hint)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: expected a non-empty JSON list of {what}s")
    return entries
