"""Reading an open_clip ``local-dir`` folder (``vlmforge export --format open_clip``, or any folder of
that layout): the model and tokenizer exactly as open_clip builds them, the image transform of its
``preprocess_cfg``, and its tokenizer behind the interface of vlmforge's caption tokenizers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmforge.data.base import DEFAULT_PROMPTS
from vlmforge.errors import UserError
from vlmforge.interop.inference_model import OPEN_CLIP_CONFIG, ImageTransform, InferenceModel
from vlmforge.storage import read_json

OPEN_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPEN_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest",)  # the transform vlmforge applies; others are refused, not approximated


class ExportTokenizer:
    """open_clip's tokenizer of an export (``HFTokenizer`` or its bundled BPE) with the interface of
    ``vlmforge.data.tokenizers.TextTokenizer``: ``tok(texts, context_length)``, special ids, ``decode``."""

    kind = "open_clip-export"

    def __init__(self, inner: Any) -> None:
        self._tok = inner
        self._hf = getattr(inner, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer

    def __call__(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        return self._tok(list(texts), context_length=context_length)

    @property
    def start_id(self) -> int:
        return int(self._hf.bos_token_id if self._hf is not None else self._tok.sot_token_id)

    @property
    def end_id(self) -> int:
        return int(self._hf.eos_token_id if self._hf is not None else self._tok.eot_token_id)

    @property
    def pad_id(self) -> int:
        pad = self._hf.pad_token_id if self._hf is not None else None
        return int(pad) if pad is not None else 0

    @property
    def vocab_size(self) -> int:
        return int(len(self._hf) if self._hf is not None else self._tok.vocab_size)

    def decode(self, ids: Sequence[int]) -> str:
        kept = [i for i in ids if i not in (self.pad_id, self.start_id, self.end_id)]
        if self._hf is not None:
            return str(self._hf.decode(kept, skip_special_tokens=True)).strip()
        return str(self._tok.decode(kept)).strip()


def model_kind(model: Any) -> str:
    """clip, siglip (a trained logit bias) or coca, from the model open_clip built."""
    if type(model).__name__ == "CoCa":
        return "coca"
    return "siglip" if getattr(model, "logit_bias", None) is not None else "clip"


def export_transform(path: Path, preprocess: dict[str, Any], image_size: int) -> ImageTransform:
    mode = preprocess.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise UserError(
            f"{path / OPEN_CLIP_CONFIG}: preprocess_cfg.resize_mode {mode!r} is not supported here",
            hint="vlmforge reads exports whose images are resized by their shortest side and centre-cropped",
        )
    size = preprocess.get("size", image_size)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    mean = tuple(float(v) for v in preprocess.get("mean", OPEN_CLIP_MEAN))
    std = tuple(float(v) for v in preprocess.get("std", OPEN_CLIP_STD))
    return ImageTransform(size, mean, std)


def load_open_clip_export(path: Path, device: torch.device) -> InferenceModel:
    """The model and tokenizer ``open_clip.create_model_and_transforms("local-dir:PATH")`` and
    ``open_clip.get_tokenizer("local-dir:PATH")`` give."""
    import open_clip

    try:
        config = read_json(path / OPEN_CLIP_CONFIG)
    except ValueError as exc:
        raise UserError(f"{path / OPEN_CLIP_CONFIG}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_cfg" not in config:
        raise UserError(
            f"{path / OPEN_CLIP_CONFIG}: no model_cfg", hint="is this an open_clip local-dir folder?"
        )
    try:
        model = open_clip.create_model_and_transforms(f"local-dir:{path}")[0]
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{path}: open_clip cannot load this folder: {exc}") from None
    text_cfg = config["model_cfg"].get("text_cfg", {})
    context = int(text_cfg.get("context_length", getattr(model, "context_length", 77)))
    visual_size = getattr(model.visual, "image_size", 224)
    image_size = int(visual_size[0] if isinstance(visual_size, tuple | list) else visual_size)
    weights = next(iter(sorted(path.glob("open_clip_model.*"))), path / "open_clip_model.safetensors")
    known = config.get("vlmforge") or {}  # what vlmforge's export records about the run
    return InferenceModel(
        templates=tuple(known.get("zeroshot_templates") or DEFAULT_PROMPTS),
        classnames=known.get("classnames"),
        kind=model_kind(model),
        source="open_clip export",
        path=path,
        weights=weights,
        model=model.to(device),
        tokenizer=ExportTokenizer(tokenizer),
        transform=export_transform(path, config.get("preprocess_cfg") or {}, image_size),
        context_length=context,
        device=device,
    )
