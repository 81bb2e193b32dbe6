"""A folder of images + captions file (.jsonl or .csv): ``image``, ``caption``, optional ``label``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from vlmforge.config.schema import FolderData
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.images import ImageError, decode_rgb, square_tensor
from vlmforge.errors import UserError


def read_caption_rows(path: Path) -> list[dict[str, str]]:
    """Rows of the captions file; errors name the file and line."""
    if not path.is_file():
        raise UserError(
            f"captions file not found: {path}", hint="set data.path / data.captions to an existing file"
        )
    rows: list[dict[str, str]] = []
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_no}: each line must be a JSON object")
            rows.append(row)
    for line_no, row in enumerate(rows, start=1):
        missing = [k for k in ("image", "caption") if not row.get(k)]
        if missing:
            raise UserError(
                f"{path}: row {line_no} has no {' or '.join(missing)}", hint="every row needs image + caption"
            )
    if not rows:
        raise UserError(f"{path}: no samples", hint="add rows with image and caption")
    return rows


def load_rgb(path: Path, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Decode and transform one image; an unreadable one raises BadSample naming the file."""
    try:
        img = decode_rgb(path)
    except ImageError as exc:
        raise BadSample(Drop(str(path.parent), path.name, exc.reason, exc.detail)) from None
    return square_tensor(img, size, mean, std)


def folder_set(cfg: FolderData) -> ImageTextSet:
    root = cfg.path
    if not root.is_dir():
        raise UserError(f"data.path: folder not found: {root}", hint="point data.path at the image folder")
    captions_path = root / cfg.captions
    rows = read_caption_rows(captions_path)
    files = [root / str(row["image"]) for row in rows]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise UserError(f"{captions_path}: {len(absent)} image file(s) listed but missing: {shown}")

    labels, classnames = _labels(rows, cfg.classnames, captions_path)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)

    def load(i: int) -> torch.Tensor:
        return load_rgb(files[i], cfg.image_size, mean, std)

    listing = "\n".join(f"{row['image']}\t{f.stat().st_size}" for row, f in zip(rows, files, strict=True))
    return ImageTextSet(
        name=root.name,
        keys=[str(row["image"]) for row in rows],
        captions=[[str(row["caption"])] for row in rows],
        load_image=load,
        labels=labels,
        classnames=classnames,
        fingerprint=fingerprint_bytes(captions_path.read_bytes(), listing.encode()),
    )


def _labels(
    rows: list[dict[str, str]], classnames: list[str] | None, source: Path
) -> tuple[np.ndarray | None, list[str] | None]:
    raw = [row.get("label") for row in rows]
    if all(v is None or v == "" for v in raw):
        return None, classnames
    if any(v is None or v == "" for v in raw):
        raise UserError(f"{source}: some rows have a label and some do not", hint="label every row or none")
    if classnames is not None:
        try:
            ids = [int(v) if str(v).lstrip("-").isdigit() else classnames.index(str(v)) for v in raw]
        except ValueError as exc:
            raise UserError(f"{source}: label not in data.classnames ({exc})") from None
        if not all(0 <= i < len(classnames) for i in ids):
            raise UserError(f"{source}: integer labels must index data.classnames (0..{len(classnames) - 1})")
        return np.asarray(ids, dtype=np.int64), classnames
    names = sorted({str(v) for v in raw})
    return np.asarray([names.index(str(v)) for v in raw], dtype=np.int64), names
