"""The `model` section of a finetune recipe: LLaVA (Liu et al. 2023) on transformers' Llava classes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vlmforge.config.base import Section
from vlmforge.config.towers import WordTokenizer


class ClipVisionEncoder(Section):
    """A CLIP ViT image encoder (transformers ``CLIPVisionModel``). Defaults: ViT-L/14 at 336 px."""

    image_size: int = Field(336, ge=8, le=4096, description="Input side in pixels (at most 4096).")
    patch_size: int = Field(14, ge=1, description="ViT patch side in pixels.")
    width: int = Field(1024, ge=8, description="Transformer width.")
    layers: int = Field(24, ge=1, description="Transformer blocks.")
    heads: int = Field(16, ge=1, description="Attention heads.")
    intermediate_size: int = Field(4096, ge=8, description="MLP hidden width.")
    quick_gelu: bool = Field(
        True, description="QuickGELU activations (OpenAI CLIP's); false for towers trained with GELU."
    )
    pretrained: str | None = Field(
        None,
        description="CLIP image tower to start from, loaded when training only: a transformers folder or hub "
        "name (from_pretrained), a vlmforge CLIP run or an open_clip local-dir export; its sizes and "
        "activation must match the fields above (planning never downloads).",
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
    quantize: Literal["none", "nf4"] = Field(
        "none",
        description="Base weights under the adapters. 'nf4': QLoRA (Dettmers et al. 2023): the LLM's linear "
        "layers in 4-bit NormalFloat with double quantization (bitsandbytes, the qlora extra; CUDA or CPU; "
        "needs llm.pretrained). Embeddings, LM head, norms, the vision encoder and the projector stay "
        "16-bit, so stages may train the projector and/or the adapters, never the LLM's own weights; each "
        "stage's adapters merge into the 16-bit pretrained weights.",
    )


class MaplMapper(Section):
    """MAPL's mapping network (Mañas et al. 2023, mair-lab/mapl ``MappingNetwork``): the visual features
    projected down to ``width``, followed by ``queries`` learned constant tokens, a pre-norm transformer
    encoder over both, and the constant tokens' outputs projected up to the LLM width — a fixed, small
    number of image tokens whatever the encoder's patch count."""

    queries: int = Field(32, ge=1, description="Learned query tokens = image tokens the LLM reads.")
    width: int = Field(256, ge=8, description="Hidden width of the mapper's transformer.")
    layers: int = Field(4, ge=1, description="Transformer encoder layers.")
    heads: int = Field(8, ge=1, description="Attention heads (must divide width).")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> MaplMapper:
        if self.width % self.heads:
            raise ValueError(f"mapper width {self.width} is not divisible by heads {self.heads}")
        return self


class LlamaAdapter(Section):
    """LLaMA-Adapter V2-style adapters (Gao et al. 2023): zero-init gated prompts in the top blocks, plus
    the LLM's biases, per-output scales and norm gains, trained by stages with ``trainable: adapter``."""

    prompt_length: int = Field(10, ge=1, description="Learned prompt tokens per adapted block.")
    layers: int = Field(30, ge=1, description="Adapted blocks from the top (LLaMA-Adapter: 30 of 32).")


class LlavaModel(Section):
    """LLaVA: a frozen CLIP vision encoder, a projector into the LLM's embedding space and a causal LLM
    (Liu et al. 2023; LLaVA-1.5: mlp2x_gelu projector), on transformers' LlavaForConditionalGeneration."""

    kind: Literal["llava"] = "llava"
    vision: ClipVisionEncoder = Field(default_factory=ClipVisionEncoder, description="Vision encoder.")
    projector: Literal["linear", "mlp2x_gelu", "mapl"] = Field(
        "mlp2x_gelu",
        description="Vision-to-LLM projector: one linear map per patch (LLaVA; LiMBeR's linear map), "
        "linear-GELU-linear (LLaVA-1.5) or MAPL's mapper (learned query tokens, see `mapper`).",
    )
    mapper: MaplMapper = Field(
        default_factory=MaplMapper, description="MAPL mapper sizes (used with projector: mapl)."
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
    adapter: LlamaAdapter | None = Field(
        None,
        description="LLaMA-Adapter V2-style prompts and bias/scale tuning, for stages with trainable: "
        "adapter (part of the model once set: the LLM gets zero-initialised biases).",
    )
    image_layout: Literal["single", "anyres"] = Field(
        "single",
        description="'single': the image resized to the encoder's side (LLaVA, LLaVA-1.5). 'anyres': "
        "LLaVA-NeXT's high-resolution tiling: the image resized into the best of grid_pinpoints, cut into "
        "encoder-sized crops read with a global view, one newline embedding per feature row "
        "(transformers' LlavaNextForConditionalGeneration).",
    )
    grid_pinpoints: list[tuple[int, int]] = Field(
        default_factory=list,
        description="anyres: the (height, width) resolutions an image may be tiled at, each a multiple of "
        "vision.image_size (LLaVA-NeXT: [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]).",
    )
    anyres_image_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="anyres: side of the square images the data is loaded at before tiling; default: the "
        "largest pinpoint side.",
    )
    pretrained: str | None = Field(
        None,
        description="A whole LLaVA to start from, loaded when training only: a transformers "
        "LlavaForConditionalGeneration folder or hub name, a `vlmforge export --format hf` folder or a "
        "finetune stage folder; its sizes must match the fields above (pair it with tokenizer: "
        "{kind: pretrained, name: <the same folder>}).",
    )

    @property
    def image_tokens(self) -> int:
        """Visual tokens per image: MAPL's query tokens, else one per patch (the class token is dropped,
        LLaVA's 'default')."""
        if self.projector == "mapl":
            return self.mapper.queries
        if self.image_layout == "anyres":
            from vlmforge.tiling import anyres_tokens

            side = self.input_side
            return anyres_tokens(
                (side, side), self.grid_pinpoints, self.vision.image_size, self.vision.patch_size
            )
        return (self.vision.image_size // self.vision.patch_size) ** 2

    @property
    def input_side(self) -> int:
        """Side of the square images the data is loaded at: the encoder's, or anyres' source size."""
        if self.image_layout == "single":
            return self.vision.image_size
        return self.anyres_image_size or max(side for pinpoint in self.grid_pinpoints for side in pinpoint)

    def without_pretrained(self) -> LlavaModel:
        """The same architecture with random towers: what planning builds, and what trained weights fill."""
        return self.model_copy(
            update={
                "pretrained": None,
                "vision": self.vision.model_copy(update={"pretrained": None}),
                "llm": self.llm.model_copy(update={"pretrained": None}),
            }
        )

    @model_validator(mode="after")
    def _fits_positions(self) -> LlavaModel:
        states = self.vision.layers + 1  # the embeddings, then each block's output
        if not -states <= self.vision_feature_layer < states:
            raise ValueError(
                f"vision_feature_layer {self.vision_feature_layer} is outside the {states} hidden states "
                f"of a {self.vision.layers}-layer encoder"
            )
        self._check_anyres()
        if self.adapter is not None and self.adapter.layers > self.llm.layers:
            raise ValueError(f"adapter.layers {self.adapter.layers} exceeds the LLM's {self.llm.layers}")
        longest = self.image_tokens + self.max_text_tokens
        if longest > self.llm.max_position_embeddings:
            raise ValueError(
                f"{self.image_tokens} image tokens + max_text_tokens {self.max_text_tokens} exceed "
                f"llm.max_position_embeddings {self.llm.max_position_embeddings}"
            )
        return self

    def _check_anyres(self) -> None:
        if self.image_layout == "single":
            if self.grid_pinpoints or self.anyres_image_size is not None:
                raise ValueError("grid_pinpoints and anyres_image_size need image_layout: anyres")
            return
        crop = self.vision.image_size
        if not self.grid_pinpoints:
            raise ValueError(f"image_layout anyres needs grid_pinpoints, e.g. [[{crop}, {2 * crop}]]")
        uneven = [list(p) for p in self.grid_pinpoints if p[0] % crop or p[1] % crop or min(p) <= 0]
        if uneven:
            raise ValueError(
                f"grid_pinpoints {uneven} are not positive multiples of vision.image_size {crop}"
            )
        if self.projector == "mapl" or self.adapter is not None:
            raise ValueError("image_layout anyres takes the linear or mlp2x_gelu projector, without adapter")
