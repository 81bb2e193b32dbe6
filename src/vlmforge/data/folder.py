"""A folder of images + captions file (.jsonl or .csv): ``image``, ``caption``, optional ``label`` and
``caption_id``.

Rows are kept, or dropped and counted like a tar's bad samples: a line that is not UTF-8 as
``bad_caption``, an image path that leads outside the folder (absolute, '..', a symlink out) as
``unsafe_path`` unless the recipe sets ``allow_outside: true`` (such a file is never opened).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlmforge.config.data import FolderData, FolderFields
from vlmforge.data.accounting import BadSample, Drop
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.captions import CaptionRow, image_file, read_caption_rows
from vlmforge.data.images import ImageError, decode_rgb, square_tensor
from vlmforge.errors import UserError


@dataclass
class FolderIndex:
    """A folder source opened: the usable rows and their files, and the rows dropped (with reasons)."""

    root: Path
    captions: Path
    rows: list[CaptionRow]
    files: list[Path]
    dropped: list[Drop]


def open_folder(cfg: FolderFields) -> FolderIndex:
    """The folder's rows: unusable ones dropped, listed files that do not exist an error naming them."""
    root = cfg.path
    if not root.is_dir():
        raise UserError(f"data.path: folder not found: {root}", hint="point data.path at the image folder")
    captions_path = root / cfg.captions
    index = FolderIndex(root, captions_path, [], [], [])
    for row in read_caption_rows(captions_path):
        if row.drop is not None:
            index.dropped.append(row.drop)
            continue
        file, refused = image_file(root, row.image, cfg.allow_outside)
        if refused:
            index.dropped.append(Drop(str(root), row.image, "unsafe_path", refused))
            continue
        index.rows.append(row)
        index.files.append(file)
    absent = [str(f) for f in index.files if not f.is_file()]
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise UserError(f"{captions_path}: {len(absent)} image file(s) listed but missing: {shown}")
    return index


def load_rgb(
    path: Path, size: int, mean: torch.Tensor, std: torch.Tensor, where: tuple[str, str] | None = None
) -> torch.Tensor:
    """Decode and transform one image; an unreadable one raises BadSample naming the file (or ``where``:
    the folder and the name its captions file gives it)."""
    try:
        img = decode_rgb(path)
    except ImageError as exc:
        shard, key = where or (str(path.parent), path.name)
        raise BadSample(Drop(shard, key, exc.reason, exc.detail)) from None
    return square_tensor(img, size, mean, std)


def folder_set(cfg: FolderData) -> ImageTextSet:
    index = open_folder(cfg)
    if not index.rows:
        shown = "; ".join(str(d) for d in index.dropped[:3])
        raise UserError(f"{index.captions}: no usable samples ({len(index.dropped)} dropped: {shown})")
    rows, files = index.rows, index.files
    labels, classnames = _labels(rows, cfg.classnames, index.captions)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)

    def load(i: int) -> torch.Tensor:
        return load_rgb(files[i], cfg.image_size, mean, std, (str(index.root), rows[i].image))

    listing = "\n".join(f"{row.image}\t{f.stat().st_size}" for row, f in zip(rows, files, strict=True))
    return ImageTextSet(
        name=index.root.name,
        keys=[row.image for row in rows],
        captions=[[row.caption] for row in rows],
        load_image=load,
        labels=labels,
        classnames=classnames,
        fingerprint=fingerprint_bytes(index.captions.read_bytes(), listing.encode()),
        rejected=index.dropped,
        caption_keys=_caption_keys(rows, index.captions),
    )


def _caption_keys(rows: list[CaptionRow], source: Path) -> list[str] | None:
    """The optional ``caption_id`` column: rows sharing a value show the same caption (all rows or none)."""
    raw = [row.extra.get("caption_id") for row in rows]
    given = [v is not None and v != "" for v in raw]
    if not any(given):
        return None
    if not all(given):
        missing = next(row.line for row, has in zip(rows, given, strict=True) if not has)
        raise UserError(
            f"{source}: line {missing} has no caption_id while other rows have one",
            hint="give every row a caption_id, or none (then rows with the same caption share one)",
        )
    return [str(v) for v in raw]


def _labels(
    rows: list[CaptionRow], classnames: list[str] | None, source: Path
) -> tuple[np.ndarray | None, list[str] | None]:
    raw = [row.extra.get("label") for row in rows]
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
