"""Recipe sections for standard benchmarks read from their own public file layouts at a local path (no
downloads): ``tasks:`` of an eval recipe. Each runs on one loaded model (a run directory or an exported
folder) through ``vlmforge.evaluate.benchmarks``; they need no ``data:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from vlmforge.config.base import Section


class BenchmarkTask(Section):
    """What every benchmark section has: a result name and a fixed subset size. Its files are its
    ``Path`` fields (checked, all at once, before the model loads)."""

    kind: str
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Results go to eval/<name>.json (default: the kind); name two tasks of one kind apart.",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Evaluate a fixed random subset of at most this many items (the same for every model; "
        "default: all).",
    )

    @property
    def result_name(self) -> str:
        return self.name or self.kind

    def paths(self) -> dict[str, Path]:
        """{field (with list position): path} for every file or folder this benchmark reads."""
        found: dict[str, Path] = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, Path):
                found[field] = value
            elif isinstance(value, list):
                found |= {f"{field}[{i}]": v for i, v in enumerate(value) if isinstance(v, Path)}
        return found


class ImageNetTask(BenchmarkTask):
    """Zero-shot classification on ImageNet-style class folders (torchvision ImageFolder layout): top-1,
    top-5 and mean per-class accuracy with prompt-ensembled class embeddings (CLIP §3.1.4)."""

    kind: Literal["imagenet"] = "imagenet"
    root: Path = Field(
        description="Folder of class folders (root/<class>/*.JPEG|jpg|png), e.g. ILSVRC2012's val/ sorted "
        "into its 1000 synset folders; classes are the folders in sorted order."
    )
    classnames: Path | None = Field(
        None,
        description="Class names: a text file with one name per line in sorted-folder order, or a JSON "
        "object {folder: name} (default: the folder names).",
    )
    templates: Path | None = Field(
        None,
        description="Prompt templates, one per line with '{}' for the class name (default: the model's "
        "zero-shot templates).",
    )
