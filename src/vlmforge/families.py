"""Model families: which builder, training module and planning loss serve each ``model.kind``.

An explicit table, no discovery magic: adding a family means adding its recipe section to
``vlmforge.config.models`` (and its eval tasks to ``vlmforge.config.evaluation.EVAL_TASKS``), a models
module with the functions of ``FamilyModels``, a LightningModule subclassing
``vlmforge.training.module.TrainingModule``, and one line per kind below. Modules are named by
import path so that ``vlmforge --help`` and recipe validation never import torch or open_clip.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from vlmforge.config.llava import LlavaModel
from vlmforge.config.models import ModelConfig


class FamilyModels(Protocol):
    """What a family's models module offers (``vlmforge.models.<family>``)."""

    def build_model(self, cfg: Any, vocab_size: int, device: str = "cpu") -> Any:
        """A randomly initialised model (then ``cfg.pretrained`` loaded); ``device="meta"`` for planning."""

    def image_size(self, cfg: Any, model: Any) -> int:
        """Side of the square images the model takes."""

    def context_length(self, cfg: Any, model: Any) -> int:
        """Tokens per caption, start and end tokens included."""

    def synthetic_loss(self, cfg: Any, model: Any, batch_size: int, device: str, vocab_size: int) -> Any:
        """A scalar computed by one training forward pass on ``batch_size`` synthetic samples: counted on
        the meta device for FLOPs and saved activations, timed on a real device by ``plan --calibrate``."""


@dataclass(frozen=True)
class Family:
    """Which modules serve a model kind. The eval tasks each kind supports are recipe facts
    (``vlmforge.config.evaluation.EVAL_TASKS``), checked when a recipe is validated."""

    name: str  # the published-runs family whose utilisation prior applies
    models_module: str
    training_module: str  # "package.module:ClassName"

    @property
    def models(self) -> FamilyModels:
        return importlib.import_module(self.models_module)  # type: ignore[return-value]

    def module_class(self) -> Any:
        path, _, name = self.training_module.partition(":")
        return getattr(importlib.import_module(path), name)


CONTRASTIVE = Family(
    "contrastive", "vlmforge.models.contrastive", "vlmforge.training.contrastive:ContrastiveModule"
)
GENERATIVE = Family("generative", "vlmforge.models.generative", "vlmforge.training.generative:CoCaModule")
# Both masked kinds share the model and training code (only the joint one has an image-text embedding).
MASKED = Family("masked", "vlmforge.models.masked", "vlmforge.training.masked:MaskedModule")
LLAVA = Family("llava", "vlmforge.models.llava", "vlmforge.training.llava:LlavaStageModule")

FAMILIES: dict[str, Family] = {
    "clip": CONTRASTIVE,
    "siglip": CONTRASTIVE,
    "coca": GENERATIVE,
    "masked": MASKED,
    "flava": MASKED,
    "llava": LLAVA,
}


def family_for(cfg: ModelConfig | LlavaModel) -> Family:
    return FAMILIES[cfg.kind]
