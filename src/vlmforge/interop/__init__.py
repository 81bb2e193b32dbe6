"""Models leaving vlmforge in the ecosystem's formats (``vlmforge export``) and entering it
(``model.pretrained`` and friends).

An explicit table, as ``vlmforge.families``: which exporter writes which format for which model kind.
Exporters are named by import path, so the CLI lists formats without importing torch. Each exporter is
``export(run_dir, out, stage, dtype)`` and writes into ``out``, an empty folder; the verb owns the
temporary folder, the final rename, ``--overwrite`` and the model card.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

Exporter = Callable[[Path, Path, "str | None", Any], None]

# format -> what a user loads it with
FORMATS: dict[str, str] = {
    "open_clip": 'open_clip.create_model_and_transforms("local-dir:DIR")',
    "hf": "transformers' from_pretrained(DIR) and AutoProcessor.from_pretrained(DIR)",
    # without pretrained=True timm builds the architecture with random weights
    "timm": 'timm.create_model("local-dir:DIR", pretrained=True) (the image encoder)',
}

# (format, model kind) -> "module:function"
EXPORTERS: dict[tuple[str, str], str] = {
    ("open_clip", "clip"): "vlmforge.interop.open_clip_export:export",
    ("open_clip", "siglip"): "vlmforge.interop.open_clip_export:export",
    ("open_clip", "coca"): "vlmforge.interop.open_clip_export:export",
    ("hf", "clip"): "vlmforge.interop.hf_clip:export",
    ("hf", "llava"): "vlmforge.interop.hf_llava:export",
    ("timm", "clip"): "vlmforge.interop.timm_export:export",
    ("timm", "siglip"): "vlmforge.interop.timm_export:export",
    ("timm", "coca"): "vlmforge.interop.timm_export:export",
    ("timm", "masked"): "vlmforge.interop.timm_export:export",
    ("timm", "flava"): "vlmforge.interop.timm_export:export",
}


# why a format cannot express a model kind, where it is not obvious (said when it is asked for)
CANNOT: dict[tuple[str, str], str] = {
    (
        "hf",
        "siglip",
    ): "transformers' SiglipModel has no class token, no pre-LayerNorm, no causal text mask and "
    "pools text at the last position, and CLIPModel has no logit bias",
    ("hf", "coca"): "transformers has no CoCa model",
    ("hf", "masked"): "transformers has no model for open_clip's towers with MAE heads",
    ("hf", "flava"): "transformers' FlavaModel has another architecture (a fusion encoder, BERT-style text)",
    ("open_clip", "masked"): "open_clip has no MAE model",
    ("open_clip", "flava"): "open_clip's config cannot express the text tower's padding mask",
    ("open_clip", "llava"): "open_clip has no LLaVA model",
}


def formats_for(kind: str) -> list[str]:
    return [fmt for fmt, k in EXPORTERS if k == kind]


def exporter(fmt: str, kind: str) -> Exporter:
    path, _, name = EXPORTERS[(fmt, kind)].partition(":")
    return getattr(importlib.import_module(path), name)  # type: ignore[no-any-return]
