"""Model sections of a recipe: one pydantic model per `model.kind`, gathered in the ``ModelConfig`` union.

Each family (see ``vlmforge.families``) adds its kinds here; the union is what a recipe's ``model:`` accepts.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section


class VisionTower(Section):
    image_size: int = Field(224, ge=8, description="Input side in pixels.")
    patch_size: int = Field(16, ge=1, description="ViT patch side in pixels.")
    width: int = Field(768, ge=8, description="Transformer width.")
    layers: int = Field(12, ge=1, description="Transformer blocks.")
    head_width: int = Field(64, ge=8, description="Width per attention head (heads = width / head_width).")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of width.")
    pool_type: Literal["tok", "avg"] = Field(
        "tok", description="Image feature: the class token ('tok', CLIP) or the mean of patch tokens ('avg')."
    )

    @model_validator(mode="after")
    def _divisible(self) -> VisionTower:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.head_width:
            raise ValueError(f"width {self.width} is not a multiple of head_width {self.head_width}")
        return self


class TextTower(Section):
    context_length: int = Field(77, ge=4, description="Tokens per caption, including start/end tokens.")
    width: int = Field(512, ge=8, description="Transformer width.")
    heads: int = Field(8, ge=1, description="Attention heads.")
    layers: int = Field(12, ge=1, description="Transformer blocks.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of width.")

    @model_validator(mode="after")
    def _divisible(self) -> TextTower:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


class WordTokenizer(Section):
    """Whitespace word vocabulary built from the training captions (tiny models, closed vocabularies)."""

    kind: Literal["word"] = "word"


class OpenClipTokenizer(Section):
    """open_clip's bundled byte-pair tokenizer (49,408 tokens), as used by CLIP."""

    kind: Literal["open_clip"] = "open_clip"
    name: str = Field("ViT-B-32", description="open_clip model name whose tokenizer to use.")


Tokenizer = Annotated[WordTokenizer | OpenClipTokenizer, Field(discriminator="kind")]


def open_clip_architectures() -> set[str]:
    """Names of open_clip's bundled architectures, read from its config files without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return set()
    config_dir = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return {p.stem for p in config_dir.glob("*.json")}


Perturbation = Literal["swap_words", "swap_attributes", "shuffle_words", "shuffle_trigrams"]
PERTURBATION_KINDS: list[Perturbation] = [
    "swap_words",
    "swap_attributes",
    "shuffle_words",
    "shuffle_trigrams",
]


class HardNegatives(Section):
    """NegCLIP's hard-negative captions (Yuksekgonul et al. 2023): each caption's words reordered, scored by
    its image against the batch's true captions; see ``vlmforge.data.perturb``."""

    perturbations: list[Perturbation] = Field(
        default_factory=lambda: list(PERTURBATION_KINDS),
        min_length=1,
        description="Reorderings to draw from, one per caption per epoch among those that apply to it: "
        "swap_words (two content words), swap_attributes (two attribute words, i.e. adjective-noun "
        "bindings), shuffle_words (all words), shuffle_trigrams (the order of word trigrams).",
    )
    attributes: list[str] | None = Field(
        None, description="Attribute words for swap_attributes (default: built-in colours, sizes, materials)."
    )


class SslConfig(Section):
    """SLIP's self-supervised term (Mu et al. 2022): SimCLR's NT-Xent between two augmented views of each
    image, through an MLP head on the image tower's output."""

    weight: float = Field(1.0, gt=0, description="Total loss = contrastive + weight x ssl (SLIP: 1).")
    temperature: float = Field(0.1, gt=0, description="NT-Xent temperature (SLIP: 0.1).")
    hidden_dim: int = Field(4096, ge=8, description="Hidden width of the 3-layer projection head.")
    out_dim: int = Field(256, ge=8, description="Output width of the projection head.")
    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="Random resized crop: range of the kept fraction of the image area."
    )
    flip: bool = Field(True, description="Random horizontal flips.")
    color_jitter: float = Field(
        0.4, ge=0, lt=1, description="Brightness/contrast/saturation factors drawn in 1 +- this (p = 0.8)."
    )
    grayscale_p: float = Field(0.2, ge=0, le=1, description="Probability of a grayscale view.")

    @model_validator(mode="after")
    def _scale_range(self) -> SslConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        return self


class ClipModel(Section):
    """Contrastive dual encoder trained with the InfoNCE loss (CLIP, Radford et al. 2021)."""

    kind: Literal["clip"] = "clip"
    arch: str | None = Field(
        None, description="open_clip architecture name (e.g. ViT-B-16); or give vision+text."
    )
    embed_dim: int = Field(512, ge=8, description="Joint embedding width (custom towers only).")
    vision: VisionTower | None = Field(None, description="Custom vision tower (when `arch` is not set).")
    text: TextTower | None = Field(None, description="Custom text tower (when `arch` is not set).")
    tokenizer: Tokenizer = Field(default_factory=OpenClipTokenizer, description="Caption tokenizer.")
    pretrained: Path | None = Field(
        None, description="Local checkpoint to initialise from (random init if unset)."
    )
    quick_gelu: bool = Field(False, description="Use QuickGELU activations (OpenAI CLIP weights need it).")
    patch_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of image patches dropped in training: FLIP's masking (Li et al. 2023).",
    )
    unmasked_tuning_steps: int = Field(
        0, ge=0, description="Train the last N steps without patch dropout (FLIP's unmasked tuning phase)."
    )
    init_logit_scale: float = Field(
        math.log(1 / 0.07), description="Initial log temperature, CLIP's log(1/0.07)."
    )
    local_loss: bool = Field(
        True,
        description="Under DDP, score local queries against all gathered keys (same gradient, less memory).",
    )
    gather_with_grad: bool = Field(True, description="Let gradients flow through the all-gather of features.")
    hard_negatives: HardNegatives | None = Field(
        None, description="NegCLIP: add a reordered copy of every caption to the image->text softmax."
    )
    ssl: SslConfig | None = Field(None, description="SLIP: add a SimCLR term on two augmented image views.")

    @model_validator(mode="after")
    def _arch_or_towers(self) -> ClipModel:
        towers = (self.vision is not None, self.text is not None)
        if self.arch is not None and any(towers):
            raise ValueError("give either `arch` or custom `vision` + `text` towers, not both")
        if self.arch is None and not all(towers):
            raise ValueError("give an open_clip `arch` name, or both `vision` and `text` towers")
        if self.arch is not None:
            known = open_clip_architectures()
            if known and self.arch not in known:
                import difflib

                close = difflib.get_close_matches(self.arch, sorted(known), n=3)
                raise ValueError(
                    f"unknown open_clip arch {self.arch!r}; closest: {', '.join(close) or 'none'}"
                )
        return self


class SigLipModel(ClipModel):
    """Sigmoid loss: every image-text pair is its own binary decision, with a learnable bias
    (SigLIP, Zhai et al. 2023); no softmax over the batch."""

    kind: Literal["siglip"] = "siglip"  # type: ignore[assignment]
    init_logit_scale: float = Field(math.log(10), description="Initial log temperature, SigLIP's log(10).")
    init_logit_bias: float = Field(
        -10.0, description="Initial logit bias, SigLIP's -10 (most pairs are negatives)."
    )

    @model_validator(mode="after")
    def _softmax_negatives(self) -> SigLipModel:
        if self.hard_negatives is not None:
            raise ValueError("hard_negatives extend the softmax (InfoNCE) loss: use them with kind: clip")
        return self


ModelConfig = Annotated[ClipModel | SigLipModel, Field(discriminator="kind")]
