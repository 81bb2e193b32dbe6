"""A folder source's captions file (.jsonl or .csv: ``image``, ``caption``, other columns kept), read row
by row, and where the image a row names may be read from. Shared by training's folder source, ``vlmforge
data check`` and curation's folder input; no torch here, so curation imports it cheaply.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.data.accounting import Drop
from vlmforge.errors import UserError


@dataclass(frozen=True)
class CaptionRow:
    """One line (.jsonl) or row (.csv) of a captions file; ``drop`` is set when it cannot be used."""

    line: int
    image: str = ""
    caption: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the other columns: label, ...
    drop: Drop | None = None


def read_caption_rows(path: Path) -> list[CaptionRow]:
    """Every row of the captions file, in order. A row that is not UTF-8 is a ``bad_caption`` drop;
    malformed JSON and rows without image or caption are errors naming the file and line."""
    if not path.is_file():
        raise UserError(
            f"captions file not found: {path}", hint="set data.path / data.captions to an existing file"
        )
    raw = path.read_bytes()
    rows = _csv_rows(path, raw) if path.suffix == ".csv" else _jsonl_rows(path, raw)
    if not rows:
        raise UserError(f"{path}: no samples", hint="add rows with image and caption")
    return rows


def _jsonl_rows(path: Path, raw: bytes) -> list[CaptionRow]:
    rows = []
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"not UTF-8 ({exc.reason} at byte {exc.start} of the line)"
            rows.append(CaptionRow(line_no, drop=Drop(str(path), f"line {line_no}", "bad_caption", detail)))
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{line_no}: each line must be a JSON object")
        rows.append(_row(path, line_no, row))
    return rows


def _csv_rows(path: Path, raw: bytes) -> list[CaptionRow]:
    # surrogateescape: undecodable bytes survive parsing, so only the rows holding them are dropped
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8", errors="surrogateescape"), newline=""))
    rows = []
    for row in reader:
        line_no = reader.line_num
        try:
            for value in row.values():
                if isinstance(value, str):
                    value.encode("utf-8")
        except UnicodeEncodeError:
            drop = Drop(str(path), f"line {line_no}", "bad_caption", "not UTF-8")
            rows.append(CaptionRow(line_no, drop=drop))
            continue
        rows.append(_row(path, line_no, row))
    return rows


def _row(path: Path, line_no: int, row: dict[str, Any]) -> CaptionRow:
    missing = [k for k in ("image", "caption") if not row.get(k)]
    if missing:
        raise UserError(
            f"{path}: line {line_no} has no {' or '.join(missing)}", hint="every row needs image + caption"
        )
    extra = {k: v for k, v in row.items() if k not in ("image", "caption")}
    return CaptionRow(line_no, str(row["image"]), str(row["caption"]), extra)


def image_file(root: Path, name: str, allow_outside: bool = False) -> tuple[Path, str]:
    """The file a captions row names, and why it is refused ("" when it is not). Unless
    ``allow_outside``, the path with every '..' and symlink resolved must stay inside ``root``: else a
    captions file could make training or curation read any file the user can."""
    file = root / name
    if allow_outside:
        return file, ""
    try:
        resolved = file.resolve()
        inside = resolved.is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte in the name
        return file, f"cannot resolve the path ({exc})"
    if inside:
        return file, ""
    return file, f"leads outside {root} (to {resolved}); set allow_outside: true to read it"
