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

PRETRAINED_HELP = (
    "Weights to start from (random init if unset): a checkpoint file, an open_clip local-dir export, a "
    "transformers folder, a vlmforge run or export, an open_clip tag of `arch` (e.g. openai) or a hub name "
    "(tags and hub names come from the local caches when HF_HUB_OFFLINE=1)."
)


class VisionTower(Section):
    image_size: int = Field(224, ge=8, le=4096, description="Input side in pixels (at most 4096).")
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


class TransformerStack(Section):
    """Width, heads, blocks and MLP ratio of a transformer (heads must divide the width)."""

    width: int = Field(512, ge=8, description="Transformer width.")
    heads: int = Field(8, ge=1, description="Attention heads.")
    layers: int = Field(12, ge=1, description="Transformer blocks.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of width.")

    @model_validator(mode="after")
    def _divisible(self) -> TransformerStack:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


class TextTower(TransformerStack):
    context_length: int = Field(77, ge=4, description="Tokens per caption, including start/end tokens.")


class WordTokenizer(Section):
    """Whitespace word vocabulary built from the training captions (tiny models, closed vocabularies)."""

    kind: Literal["word"] = "word"


class OpenClipTokenizer(Section):
    """open_clip's bundled byte-pair tokenizer (49,408 tokens), as used by CLIP."""

    kind: Literal["open_clip"] = "open_clip"
    name: str = Field("ViT-B-32", description="open_clip model name whose tokenizer to use.")


Tokenizer = Annotated[WordTokenizer | OpenClipTokenizer, Field(discriminator="kind")]


def _open_clip_configs() -> list[Path]:
    """open_clip's bundled architecture files, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "model_configs").glob("*.json"))


def open_clip_architectures() -> set[str]:
    """Names of open_clip's bundled architectures, read from its config files without importing it."""
    return {p.stem for p in _open_clip_configs()}


def open_clip_coca_architectures() -> set[str]:
    """The bundled architectures that are CoCa models (they have a multimodal decoder)."""
    return {p.stem for p in _open_clip_configs() if "multimodal_cfg" in json.loads(p.read_text("utf-8"))}


def _arch_error(arch: str, known: set[str], what: str = "open_clip arch") -> str | None:
    """None if ``arch`` is known (or open_clip is absent), else a message with the closest names."""
    if not known or arch in known:
        return None
    import difflib

    close = difflib.get_close_matches(arch, sorted(known), n=3)
    return f"unknown {what} {arch!r}; closest: {', '.join(close) or 'none'}"


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
    pretrained: str | None = Field(None, description=PRETRAINED_HELP)
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
        error = self.arch and _arch_error(self.arch, open_clip_architectures())
        if error:
            raise ValueError(error)
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


class CoCaVisionTower(VisionTower):
    attentional_pool: bool = Field(
        True,
        description="Pool with learned queries (open_clip's CoCa): the first query gives the image "
        "embedding, the others the tokens the decoder attends to. Off: `pool_type` and the patch tokens.",
    )
    attn_pooler_queries: int = Field(256, ge=2, description="Learned queries of the attentional pooler.")
    attn_pooler_heads: int = Field(8, ge=1, description="Attention heads of the attentional pooler.")


class MultimodalDecoder(TransformerStack):
    """CoCa's captioning decoder: causal self-attention over the text tower's token outputs, then
    cross-attention to the image tokens, then a projection onto the vocabulary (per block)."""


class CoCaModel(Section):
    """Contrastive + captioning (CoCa, Yu et al. 2022): CLIP's towers plus a decoder that captions the
    image; loss = contrastive_weight x InfoNCE + caption_weight x next-token cross-entropy."""

    kind: Literal["coca"] = "coca"
    arch: str | None = Field(
        None, description="open_clip CoCa architecture (e.g. coca_ViT-B-32); or give vision+text+decoder."
    )
    embed_dim: int = Field(512, ge=8, description="Joint embedding width (custom towers only).")
    vision: CoCaVisionTower | None = Field(None, description="Custom vision tower (when `arch` is not set).")
    text: TextTower | None = Field(None, description="Custom text tower (when `arch` is not set).")
    decoder: MultimodalDecoder | None = Field(
        None, description="Custom captioning decoder (when `arch` is not set)."
    )
    tokenizer: Tokenizer = Field(default_factory=OpenClipTokenizer, description="Caption tokenizer.")
    pretrained: str | None = Field(None, description=PRETRAINED_HELP)
    quick_gelu: bool = Field(False, description="Use QuickGELU activations.")
    init_logit_scale: float = Field(
        math.log(1 / 0.07), description="Initial log temperature, CLIP's log(1/0.07)."
    )
    contrastive_weight: float = Field(1.0, ge=0, description="Weight of the contrastive term (CoCa: 1).")
    caption_weight: float = Field(2.0, ge=0, description="Weight of the captioning term (CoCa: 2).")
    local_loss: bool = Field(
        True,
        description="Under DDP, score local queries against all gathered keys (same gradient, less memory).",
    )
    gather_with_grad: bool = Field(True, description="Let gradients flow through the all-gather of features.")

    @model_validator(mode="after")
    def _arch_or_towers(self) -> CoCaModel:
        towers = (self.vision, self.text, self.decoder)
        if self.arch is not None and any(t is not None for t in towers):
            raise ValueError("give either `arch` or custom `vision` + `text` + `decoder`, not several")
        if self.arch is None and any(t is None for t in towers):
            raise ValueError("give an open_clip CoCa `arch` name, or all of `vision`, `text` and `decoder`")
        error = self.arch and _arch_error(self.arch, open_clip_coca_architectures(), "open_clip CoCa arch")
        if error:
            raise ValueError(error)
        if self.vision is not None and self.decoder is not None:
            # the decoder attends to the image tokens, which must have its width
            pooled = self.vision.attentional_pool
            token_width = self.embed_dim if pooled else self.vision.width
            if self.decoder.width != token_width:
                source = "embed_dim (attentional pooling)" if pooled else "vision.width"
                raise ValueError(f"decoder.width {self.decoder.width} must equal {source} {token_width}")
            if pooled and self.embed_dim % self.vision.attn_pooler_heads:
                raise ValueError(
                    f"embed_dim {self.embed_dim} is not a multiple of "
                    f"vision.attn_pooler_heads {self.vision.attn_pooler_heads}"
                )
        if self.contrastive_weight == 0 and self.caption_weight == 0:
            raise ValueError("contrastive_weight and caption_weight cannot both be 0")
        return self

    @property
    def context_length(self) -> int | None:
        """Caption tokens the model takes (start and end included); None if open_clip is not installed."""
        if self.text is not None:
            return self.text.context_length
        for path in _open_clip_configs():
            if path.stem == self.arch:
                return int(json.loads(path.read_text("utf-8"))["multimodal_cfg"]["context_length"])
        return None


def check_arch_or_towers(
    arch: str | None, vision: VisionTower | None, text: TextTower | None, need_text: bool
) -> None:
    """A model section names an open_clip `arch` or gives custom towers (the text one when ``need_text``)."""
    if arch is not None and (vision is not None or text is not None):
        raise ValueError("give either `arch` or custom `vision` + `text` towers, not both")
    if arch is None and (vision is None or (need_text and text is None)):
        towers = "both `vision` and `text` towers" if need_text else "a `vision` tower"
        raise ValueError(f"give an open_clip `arch` name, or {towers}")
    error = arch and _arch_error(arch, open_clip_architectures())
    if error:
        raise ValueError(error)


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


ModelConfig = Annotated[
    ClipModel | SigLipModel | CoCaModel | MaskedModel | FlavaModel, Field(discriminator="kind")
]
