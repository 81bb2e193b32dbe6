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


ModelConfig = Annotated[ClipModel | SigLipModel, Field(discriminator="kind")]


# ------------------------------------------------------------------------------------------- llava
class ClipVisionEncoder(Section):
    """A CLIP ViT image encoder (transformers ``CLIPVisionModel``). Defaults: ViT-L/14 at 336 px."""

    image_size: int = Field(336, ge=8, description="Input side in pixels.")
    patch_size: int = Field(14, ge=1, description="ViT patch side in pixels.")
    width: int = Field(1024, ge=8, description="Transformer width.")
    layers: int = Field(24, ge=1, description="Transformer blocks.")
    heads: int = Field(16, ge=1, description="Attention heads.")
    intermediate_size: int = Field(4096, ge=8, description="MLP hidden width.")
    pretrained: str | None = Field(
        None,
        description="Local folder or hub name of CLIP weights (from_pretrained), loaded when training only; "
        "their config must match the size fields (planning never downloads).",
    )

    @model_validator(mode="after")
    def _divisible(self) -> ClipVisionEncoder:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


class LlamaLM(Section):
    """A Llama-style causal LM (transformers ``LlamaModel`` + LM head). Defaults: Vicuna-7B / Llama-2-7B."""

    hidden_size: int = Field(4096, ge=8, description="Transformer width.")
    layers: int = Field(32, ge=1, description="Transformer blocks.")
    heads: int = Field(32, ge=1, description="Attention heads.")
    kv_heads: int | None = Field(None, ge=1, description="Key/value heads (grouped-query); default: heads.")
    intermediate_size: int = Field(11008, ge=8, description="SwiGLU MLP hidden width.")
    vocab_size: int | None = Field(
        None,
        ge=2,
        description="Embedding rows; default: the tokenizer's size (with <image>). Set it for a pretrained "
        "tokenizer so that `vlmforge plan` counts the right head.",
    )
    max_position_embeddings: int = Field(4096, ge=8, description="Longest sequence (image + text tokens).")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base.")
    rms_norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon.")
    pretrained: str | None = Field(
        None,
        description="Local folder or hub name of Llama weights (from_pretrained), loaded when training only; "
        "their config must match the size fields.",
    )

    @model_validator(mode="after")
    def _divisible(self) -> LlamaLM:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        return self


class BpeTokenizer(Section):
    """A byte-level BPE vocabulary trained on the training conversations (tokenizers library)."""

    kind: Literal["bpe"] = "bpe"
    vocab_size: int = Field(2000, ge=300, description="Target vocabulary size, special tokens included.")


class PretrainedTokenizer(Section):
    """A tokenizer from a local folder or the hub (transformers AutoTokenizer), e.g. Vicuna's."""

    kind: Literal["pretrained"] = "pretrained"
    name: str = Field(description="Local folder or hub name, e.g. lmsys/vicuna-7b-v1.5.")


LlavaTokenizer = Annotated[WordTokenizer | BpeTokenizer | PretrainedTokenizer, Field(discriminator="kind")]


class LoraAdapters(Section):
    """Low-rank adapters on the LLM's linear layers (LoRA, Hu et al. 2021), through peft."""

    rank: int = Field(8, ge=1, description="Rank r of each adapter.")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: updates are scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target: str = Field(
        r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        description="Regular expression (full match) on module names that get adapters.",
    )


class LlavaModel(Section):
    """LLaVA: a frozen CLIP vision encoder, a projector into the LLM's embedding space and a causal LLM
    (Liu et al. 2023; LLaVA-1.5: mlp2x_gelu projector), on transformers' LlavaForConditionalGeneration."""

    kind: Literal["llava"] = "llava"
    vision: ClipVisionEncoder = Field(default_factory=ClipVisionEncoder, description="Vision encoder.")
    projector: Literal["linear", "mlp2x_gelu"] = Field(
        "mlp2x_gelu", description="Vision-to-LLM projector: one linear layer (LLaVA) or linear-GELU-linear."
    )
    vision_feature_layer: int = Field(
        -2, description="Hidden layer of the vision encoder fed to the projector (LLaVA: the penultimate)."
    )
    llm: LlamaLM = Field(default_factory=LlamaLM, description="Language model.")
    tokenizer: LlavaTokenizer = Field(default_factory=BpeTokenizer, description="Text tokenizer.")
    max_text_tokens: int = Field(
        2048, ge=4, description="Text tokens per sample after truncation (image tokens come on top)."
    )
    lora: LoraAdapters | None = Field(None, description="Adapters, for stages with trainable: lora.")

    @property
    def image_tokens(self) -> int:
        """Visual tokens per image: one per patch (the class token is dropped, LLaVA's 'default')."""
        return (self.vision.image_size // self.vision.patch_size) ** 2

    @model_validator(mode="after")
    def _fits_positions(self) -> LlavaModel:
        states = self.vision.layers + 1  # the embeddings, then each block's output
        if not -states <= self.vision_feature_layer < states:
            raise ValueError(
                f"vision_feature_layer {self.vision_feature_layer} is outside the {states} hidden states "
                f"of a {self.vision.layers}-layer encoder"
            )
        longest = self.image_tokens + self.max_text_tokens
        if longest > self.llm.max_position_embeddings:
            raise ValueError(
                f"{self.image_tokens} image tokens + max_text_tokens {self.max_text_tokens} exceed "
                f"llm.max_position_embeddings {self.llm.max_position_embeddings}"
            )
        return self
