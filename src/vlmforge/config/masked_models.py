"""Model sections of the masked family (``model.kind: masked | flava``): MAE-style masked image modeling,
BERT-style masked language modeling and FLAVA's joint objective, on open_clip's own ViT and text towers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section
from vlmforge.config.towers import (
    PRETRAINED_HELP,
    OpenClipTokenizer,
    TextTower,
    Tokenizer,
    TransformerStack,
    VisionTower,
    check_arch_or_towers,
)


class MAEDecoder(TransformerStack):
    """The light transformer that reconstructs pixels from the visible tokens plus mask tokens (MAE)."""

    width: int = Field(512, ge=8, description="Decoder width (MAE: 512).")
    layers: int = Field(8, ge=1, description="Decoder blocks (MAE: 8).")
    heads: int = Field(16, ge=1, description="Decoder attention heads.")


class MIMObjective(Section):
    """Masked image modeling: reconstruct the pixels of randomly masked patches (MAE, He et al. 2022)."""

    weight: float = Field(1.0, gt=0, description="Weight of the `mim` term in the total loss.")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="Fraction of patches masked (MAE: 0.75).")
    norm_pix_loss: bool = Field(
        True, description="Targets are each patch's pixels normalised by its own mean and std (MAE's best)."
    )
    decoder: MAEDecoder = Field(default_factory=MAEDecoder, description="Pixel decoder.")


class MLMObjective(Section):
    """Masked language modeling: 15% of caption tokens chosen, 80% masked / 10% random / 10% kept, predicted
    with cross-entropy (BERT, Devlin et al. 2019)."""

    weight: float = Field(1.0, gt=0, description="Weight of the `mlm` term in the total loss.")
    mask_ratio: float = Field(0.15, gt=0, lt=1, description="Fraction of caption tokens chosen (BERT: 0.15).")


class ContrastiveObjective(Section):
    """InfoNCE between the unimodal image and text embeddings (CLIP's loss, as in FLAVA)."""

    weight: float = Field(1.0, gt=0, description="Weight of the `contrastive` term in the total loss.")
    image_input: Literal["full", "visible"] = Field(
        "full",
        description="'full': a second image pass on every patch (FLAVA); 'visible': pool the MIM encoder's "
        "visible patches (FLIP-style, no second pass; needs `mim`).",
    )
    init_logit_scale: float = Field(
        math.log(1 / 0.07), description="Initial log temperature, CLIP's log(1/0.07)."
    )
    local_loss: bool = Field(
        True,
        description="Under DDP, score local queries against all gathered keys (same gradient, less memory).",
    )
    gather_with_grad: bool = Field(True, description="Let gradients flow through the all-gather of features.")


def check_plain_vit_arch(arch: str | None) -> None:
    """Masked objectives reach inside the towers: the arch must use open_clip's own ViT and text transformer
    (no timm or Hugging Face tower, no attentional pooler). Read from its config file, without open_clip."""
    if arch is None:
        return
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return
    path = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{arch}.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if (
        vision.get("timm_model_name")
        or not isinstance(vision.get("layers"), int)
        or vision.get("attentional_pool")
        or text.get("hf_model_name")
    ):
        raise ValueError(
            f"arch {arch!r} does not use open_clip's own ViT and text transformer towers, which masked "
            "objectives need: use a plain ViT arch such as ViT-B-16, or custom vision/text towers"
        )


class MaskedTowers(Section):
    """Towers shared by the masked kinds: an open_clip ViT and a bidirectional text transformer."""

    arch: str | None = Field(
        None, description="open_clip architecture whose towers to use (e.g. ViT-B-16); or give the towers."
    )
    vision: VisionTower | None = Field(None, description="Custom vision tower (when `arch` is not set).")
    text: TextTower | None = Field(None, description="Custom text tower (when `arch` is not set).")
    tokenizer: Tokenizer = Field(default_factory=OpenClipTokenizer, description="Caption tokenizer.")
    pretrained: str | None = Field(None, description=PRETRAINED_HELP)
    quick_gelu: bool = Field(False, description="Use QuickGELU activations.")
    mlm: MLMObjective | None = Field(None, description="Masked language modeling on captions (off if unset).")


class MaskedModel(MaskedTowers):
    """Masked modeling without an image-text embedding space: MAE, optionally with MLM on the captions.
    Evaluated by a linear probe on frozen image features."""

    kind: Literal["masked"] = "masked"
    mim: MIMObjective = Field(default_factory=MIMObjective, description="Masked image modeling.")

    @model_validator(mode="after")
    def _arch_or_towers(self) -> MaskedModel:
        check_arch_or_towers(self.arch, self.vision, self.text, need_text=self.mlm is not None)
        check_plain_vit_arch(self.arch)
        return self


class FlavaModel(MaskedTowers):
    """FLAVA-like joint objective (Singh et al. 2022): contrastive on the unimodal embeddings plus any of
    MIM and MLM; no multimodal fusion encoder. Supports zero-shot and retrieval evaluation."""

    kind: Literal["flava"] = "flava"
    embed_dim: int = Field(512, ge=8, description="Joint embedding width (custom towers only).")
    contrastive: ContrastiveObjective = Field(
        default_factory=ContrastiveObjective, description="Image-text contrastive term."
    )
    mim: MIMObjective | None = Field(
        default_factory=MIMObjective, description="Masked image modeling (off if null)."
    )
    mlm: MLMObjective | None = Field(
        default_factory=MLMObjective, description="Masked language modeling (off if null)."
    )

    @model_validator(mode="after")
    def _arch_or_towers(self) -> FlavaModel:
        check_arch_or_towers(self.arch, self.vision, self.text, need_text=True)
        check_plain_vit_arch(self.arch)
        if self.contrastive.image_input == "visible" and self.mim is None:
            raise ValueError(
                "contrastive.image_input 'visible' pools the MIM encoder's patches: set `mim`, or use 'full'"
            )
        return self
