"""Model families: which builder, training module and planning probe serve each ``model.kind``.

An explicit table, no discovery magic: adding a family means adding its recipe section to
``vlmforge.config.models``, a models module with the functions of ``FamilyModels``, a LightningModule
subclassing ``vlmforge.training.module.TrainingModule``, and one line per kind below. Modules are named by
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
    name: str  # the published-runs family whose utilisation prior applies
    models_module: str
    training_module: str  # "package.module:ClassName"
    eval_tasks: tuple[str, ...]  # eval task kinds this family's models support

    @property
    def models(self) -> FamilyModels:
        return importlib.import_module(self.models_module)  # type: ignore[return-value]

    def module_class(self) -> Any:
        path, _, name = self.training_module.partition(":")
        return getattr(importlib.import_module(path), name)


CONTRASTIVE = Family(
    "contrastive",
    "vlmforge.models.contrastive",
    "vlmforge.training.contrastive:ContrastiveModule",
    ("zeroshot", "retrieval", "compositional", "linear_probe"),
)

GENERATIVE = Family(
    "generative",
    "vlmforge.models.generative",
    "vlmforge.training.generative:CoCaModule",
    ("zeroshot", "retrieval", "compositional", "captioning", "linear_probe"),
)

# Both masked kinds share the model and training code; only the joint one has an image-text embedding.
MASKED = Family(
    "masked", "vlmforge.models.masked", "vlmforge.training.masked:MaskedModule", ("linear_probe",)
)
FLAVA = Family(
    "masked",
    "vlmforge.models.masked",
    "vlmforge.training.masked:MaskedModule",
    ("zeroshot", "retrieval", "compositional", "linear_probe"),
)

LLAVA = Family(
    "llava", "vlmforge.models.llava", "vlmforge.training.llava:LlavaStageModule", ("vqa", "preference")
)

FAMILIES: dict[str, Family] = {
    "clip": CONTRASTIVE,
    "siglip": CONTRASTIVE,
    "coca": GENERATIVE,
    "masked": MASKED,
    "flava": FLAVA,
    "llava": LLAVA,
}


def family_for(cfg: ModelConfig | LlavaModel) -> Family:
    return FAMILIES[cfg.kind]
