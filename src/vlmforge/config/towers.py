"""The parts model sections share: towers (an open_clip ViT, a text transformer), caption tokenizers, the
open_clip architecture names this install knows, and the check that a section names an `arch` or gives
towers."""

from __future__ import annotations

import importlib.util
import json
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


def open_clip_configs() -> list[Path]:
    """open_clip's bundled architecture files, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "model_configs").glob("*.json"))


def open_clip_architectures() -> set[str]:
    """Names of open_clip's bundled architectures, read from its config files without importing it."""
    return {p.stem for p in open_clip_configs()}


def open_clip_coca_architectures() -> set[str]:
    """The bundled architectures that are CoCa models (they have a multimodal decoder)."""
    return {p.stem for p in open_clip_configs() if "multimodal_cfg" in json.loads(p.read_text("utf-8"))}


def arch_error(arch: str, known: set[str], what: str = "open_clip arch") -> str | None:
    """None if ``arch`` is known (or open_clip is absent), else a message with the closest names."""
    if not known or arch in known:
        return None
    import difflib

    close = difflib.get_close_matches(arch, sorted(known), n=3)
    return f"unknown {what} {arch!r}; closest: {', '.join(close) or 'none'}"


def check_arch_or_towers(
    arch: str | None, vision: VisionTower | None, text: TextTower | None, need_text: bool
) -> None:
    """A model section names an open_clip `arch` or gives custom towers (the text one when ``need_text``)."""
    if arch is not None and (vision is not None or text is not None):
        raise ValueError("give either `arch` or custom `vision` + `text` towers, not both")
    if arch is None and (vision is None or (need_text and text is None)):
        towers = "both `vision` and `text` towers" if need_text else "a `vision` tower"
        raise ValueError(f"give an open_clip `arch` name, or {towers}")
    error = arch and arch_error(arch, open_clip_architectures())
    if error:
        raise ValueError(error)
