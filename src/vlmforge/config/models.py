"""Model sections of a recipe: one pydantic model per `model.kind`, gathered in the ``ModelConfig`` union.

Each family (see ``vlmforge.families``) adds its kinds here; the union is what a recipe's ``model:`` accepts.
"""

from __future__ import annotations

import importlib.util
import json
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

    @model_validator(mode="after")
    def _arch_or_towers(self) -> ClipModel:
        check_arch_or_towers(self.arch, self.vision, self.text, need_text=True)
        return self


def check_arch_or_towers(
    arch: str | None, vision: VisionTower | None, text: TextTower | None, need_text: bool
) -> None:
    """A model section names an open_clip `arch` or gives custom towers (the text one when ``need_text``)."""
    if arch is not None and (vision is not None or text is not None):
        raise ValueError("give either `arch` or custom `vision` + `text` towers, not both")
    if arch is None and (vision is None or (need_text and text is None)):
        towers = "both `vision` and `text` towers" if need_text else "a `vision` tower"
        raise ValueError(f"give an open_clip `arch` name, or {towers}")
    if arch is not None:
        known = open_clip_architectures()
        if known and arch not in known:
            import difflib

            close = difflib.get_close_matches(arch, sorted(known), n=3)
            raise ValueError(f"unknown open_clip arch {arch!r}; closest: {', '.join(close) or 'none'}")


class SigLipModel(ClipModel):
    """Sigmoid loss: every image-text pair is its own binary decision, with a learnable bias
    (SigLIP, Zhai et al. 2023); no softmax over the batch."""

    kind: Literal["siglip"] = "siglip"  # type: ignore[assignment]
    init_logit_scale: float = Field(math.log(10), description="Initial log temperature, SigLIP's log(10).")
    init_logit_bias: float = Field(
        -10.0, description="Initial logit bias, SigLIP's -10 (most pairs are negatives)."
    )


class MAEDecoder(Section):
    """The light transformer that reconstructs pixels from the visible tokens plus mask tokens (MAE)."""

    width: int = Field(512, ge=8, description="Decoder width (MAE: 512).")
    layers: int = Field(8, ge=1, description="Decoder blocks (MAE: 8).")
    heads: int = Field(16, ge=1, description="Decoder attention heads.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of width.")

    @model_validator(mode="after")
    def _divisible(self) -> MAEDecoder:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


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
    pretrained: Path | None = Field(
        None, description="Local checkpoint of this model to initialise from (random init if unset)."
    )
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


ModelConfig = Annotated[ClipModel | SigLipModel | MaskedModel | FlavaModel, Field(discriminator="kind")]
