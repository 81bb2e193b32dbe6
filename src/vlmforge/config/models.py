"""Model sections of a recipe: one pydantic model per `model.kind`, gathered in the ``ModelConfig`` union.

Each family (see ``vlmforge.families``) adds its kinds here; the union is what a recipe's ``model:`` accepts.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from vlmforge.config.augment import AugmentConfig, ImageAugment
from vlmforge.config.base import Section
from vlmforge.config.masked_models import FlavaModel, MaskedModel
from vlmforge.config.towers import (
    PRETRAINED_HELP,
    OpenClipTokenizer,
    TextTower,
    Tokenizer,
    TransformerStack,
    VisionTower,
    arch_error,
    open_clip_architectures,
    open_clip_coca_architectures,
    open_clip_configs,
)

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


class SslConfig(ImageAugment):
    """SLIP's self-supervised term (Mu et al. 2022): SimCLR's NT-Xent between two augmented views of each
    image (the view fields of ``ImageAugment``), through an MLP head on the image tower's output."""

    weight: float = Field(1.0, gt=0, description="Total loss = contrastive + weight x ssl (SLIP: 1).")
    temperature: float = Field(0.1, gt=0, description="NT-Xent temperature (SLIP: 0.1).")
    hidden_dim: int = Field(4096, ge=8, description="Hidden width of the 3-layer projection head.")
    out_dim: int = Field(256, ge=8, description="Output width of the projection head.")


class BoxHeadConfig(Section):
    """X-VLM's box head (Zeng et al. 2022, §3.4.1): the caption's embedding attends to the image's patch
    tokens and an MLP predicts the box of the object it names; trained with L1 + GIoU on matched pairs."""

    weight: float = Field(1.0, gt=0, description="Total loss = contrastive + weight x (L1 + GIoU).")
    heads: int = Field(2, ge=1, description="Attention heads of the cross-attention (divides vision width).")
    hidden_dim: int = Field(64, ge=4, description="Hidden width of the MLP that outputs the box.")


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
    multi_positive: bool = Field(
        False,
        description="StableRep's multi-positive loss: every image and caption in the batch sharing a caption "
        "id is a positive (pair with data.images_per_caption > 1).",
    )
    augment: AugmentConfig | None = Field(
        None,
        description="CLIP-rocket: a weak view of each image for the contrastive loss, and strong image and "
        "caption views scored against each other through separate heads.",
    )
    box_head: BoxHeadConfig | None = Field(
        None,
        description="X-VLM's box head: predict the box of the caption's object from the patch tokens "
        "(data with boxes, e.g. data.kind box-canvases).",
    )

    @model_validator(mode="after")
    def _arch_or_towers(self) -> ClipModel:
        towers = (self.vision is not None, self.text is not None)
        if self.arch is not None and any(towers):
            raise ValueError("give either `arch` or custom `vision` + `text` towers, not both")
        if self.arch is None and not all(towers):
            raise ValueError("give an open_clip `arch` name, or both `vision` and `text` towers")
        error = self.arch and arch_error(self.arch, open_clip_architectures())
        if error:
            raise ValueError(error)
        if self.multi_positive and self.hard_negatives is not None:
            raise ValueError("multi_positive and hard_negatives are separate losses: choose one")
        if self.augment is not None and (self.multi_positive or self.hard_negatives is not None):
            raise ValueError(
                "augment adds CLIP-rocket's loss to plain InfoNCE: drop multi_positive/hard_negatives"
            )
        others = (self.ssl, self.augment, self.hard_negatives, self.multi_positive or None)
        if self.box_head is not None and any(option is not None for option in others):
            raise ValueError(
                "box_head is added to plain InfoNCE: drop ssl/augment/hard_negatives/multi_positive"
            )
        if self.box_head is not None and self.vision is not None and self.vision.width % self.box_head.heads:
            raise ValueError(
                f"box_head.heads {self.box_head.heads} must divide vision.width {self.vision.width}"
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
        if self.multi_positive:
            raise ValueError("multi_positive spreads a softmax target over positives: use it with kind: clip")
        if self.augment is not None:
            raise ValueError("augment follows CLIP-rocket's softmax (InfoNCE) losses: use it with kind: clip")
        if self.box_head is not None:
            raise ValueError("box_head is trained beside the InfoNCE loss: use it with kind: clip")
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
        error = self.arch and arch_error(self.arch, open_clip_coca_architectures(), "open_clip CoCa arch")
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
        for path in open_clip_configs():
            if path.stem == self.arch:
                return int(json.loads(path.read_text("utf-8"))["multimodal_cfg"]["context_length"])
        return None


ModelConfig = Annotated[
    ClipModel | SigLipModel | CoCaModel | MaskedModel | FlavaModel, Field(discriminator="kind")
]
