"""Reading a benchmark's own files: JSON, JSON lines and TSV with errors that name the file and the line or
field at fault, required fields of a record, image paths under an images root (every missing one counted
before anything runs), and the fixed subset ``max_samples`` evaluates."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.errors import UserError

SUBSET_SEED = 0  # one subset for every model and run: their numbers compare
SHOWN = 5  # missing images named in an error


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path`` (``what``: the layout it should follow, for the hint)."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})",
            hint=f"give {what}",
        ) from None


def read_jsonl(path: Path, what: str) -> list[Any]:
    """One JSON value per non-empty line of ``path``."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                hint=f"give {what}",
            ) from None
    return rows


def read_tsv(path: Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a tab-separated file with a header line, as {column: text}; ``columns`` must be in the
    header, and every row must have as many fields as the header."""
    csv.field_size_limit(sys.maxsize)  # a cell may hold a whole base64 image
    lines = read_text(path).splitlines()
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path}: empty file, no header line", hint=f"give {what}") from None
    absent = [c for c in columns if c not in header]
    if absent:
        raise UserError(
            f"{path}: the header has no column {', '.join(map(repr, absent))} (it has {', '.join(header)})",
            hint=f"give {what}",
        )
    rows = []
    for number, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise UserError(
                f"{path}, line {number}: {len(fields)} tab-separated fields, the header has {len(header)}",
                hint=f"give {what}",
            )
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file", hint="check the benchmark's paths in the eval recipe"
        ) from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a file", hint="give the file's path") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start})", hint="is this the right file?"
        ) from None


def require(record: Any, field: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[field]``, which must be of ``kind``; ``where`` names the file and the record."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if field not in record:
        raise UserError(f"{where}: no field {field!r} (it has {', '.join(map(str, record)) or 'none'})")
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{where}: field {field!r} should be {names}, found {value!r}"[:300])
    return value


def image_paths(root: Path, names: Sequence[str], listed_in: Path) -> list[Path]:
    """``root/name`` for each name ``listed_in`` a benchmark file; every missing one is counted (the first
    few named) in one error, before the model runs."""
    paths = [root / name for name in names]
    missing = [name for name, path in zip(names, paths, strict=True) if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (
            f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        )
        raise UserError(
            f"{len(missing)} of the {len(names)} images {listed_in} names are not under {root}: {shown}",
            hint=f"give the images folder those paths are relative to (is {root} the right one?)",
        )
    return paths


def subset(count: int, max_samples: int | None) -> list[int]:
    """The positions evaluated: all ``count``, or a fixed random ``max_samples`` of them in order."""
    if max_samples is None or max_samples >= count:
        return list(range(count))
    chosen = np.random.default_rng(SUBSET_SEED).choice(count, size=max_samples, replace=False)
    return sorted(int(i) for i in chosen)
