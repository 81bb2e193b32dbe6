"""Reading the predictions and references that ``vlmforge eval score`` compares: JSON or JSON-lines files of
records, each problem named by file and position (line and column, or item number and field)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError, raise_all

SHOWN_PROBLEMS = 5  # problems of one kind listed before the rest are only counted


def read_document(path: Path, role: str) -> Any:
    """A JSON file, or a JSON-lines file (``.jsonl``, or any file holding one JSON value per line) as the
    list of its lines' values. ``role`` (predictions, references) names the file in errors."""
    if not path.is_file():
        raise UserError(f"{role} file {path} not found", hint=f"give the path of the {role} file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":  # several values, one per line: JSON lines
                raise _malformed(path, role, error, error.lineno) from None
    return _json_lines(path, role, text)


def _json_lines(path: Path, role: str, text: str) -> list[Any]:
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise _malformed(path, role, error, number) from None
    return values


def _malformed(path: Path, role: str, error: json.JSONDecodeError, line: int) -> UserError:
    return UserError(
        f"{role} file {path}: not valid JSON at line {line}, column {error.colno}: {error.msg}",
        hint="write one JSON document (or one JSON object per line, as .jsonl)",
    )


def read_records(path: Path, role: str, inside: str | None = None) -> list[dict[str, Any]]:
    """The list of objects a file holds: the whole document, or its ``inside`` field (COCO-style
    ``{"annotations": [...]}``); each item must be a JSON object."""
    document = read_document(path, role)
    where = f"{role} file {path}"
    if inside is not None and isinstance(document, dict):
        if inside not in document:
            raise UserError(f"{where}: no field {inside!r}", hint=f'expected {{"{inside}": [...], ...}}')
        document, where = document[inside], f"{where}, field {inside!r}"
    if not isinstance(document, list):
        shape = f'a list of objects (or {{"{inside}": [...]}})' if inside else "a list of objects"
        raise UserError(f"{where}: expected {shape}, found {type(document).__name__}", hint=f"write {shape}")
    bad = [i for i, item in enumerate(document) if not isinstance(item, dict)]
    if bad:
        raise UserError(
            f"{where}: {len(bad)} items are not JSON objects (items {first_few(bad)}, counting from 0)",
            hint='each item is an object such as {"question_id": 1, ...}',
        )
    return document


def require_fields(records: Sequence[dict[str, Any]], fields: Sequence[str], path: Path, role: str) -> None:
    """Every record has every field; the problems are reported together, a few of each field."""
    problems = []
    for name in fields:
        lacking = [i for i, record in enumerate(records) if name not in record]
        if lacking:
            problems.append(
                UserError(
                    f"{role} file {path}: {len(lacking)} items have no field {name!r} "
                    f"(items {first_few(lacking)}, counting from 0)",
                    hint=f"each {role} item needs: {', '.join(fields)}",
                )
            )
    raise_all(problems)


def record_id(record: dict[str, Any], names: Sequence[str]) -> Any:
    """The first of ``names`` the record has (None if none)."""
    return next((record[name] for name in names if name in record), None)


def require_id(records: Sequence[dict[str, Any]], names: Sequence[str], path: Path, role: str) -> None:
    """Every record carries one of the id fields ``names``."""
    lacking = [i for i, record in enumerate(records) if record_id(record, names) is None]
    if lacking:
        raise UserError(
            f"{role} file {path}: {len(lacking)} items have no {' or '.join(map(repr, names))} "
            f"(items {first_few(lacking)}, counting from 0)",
            hint=f"give each {role} item its id in {names[0]!r}",
        )


def first_few(items: Sequence[Any]) -> str:
    """The first few items, comma-separated, '...' when there are more."""
    shown = ", ".join(map(str, items[:SHOWN_PROBLEMS]))
    return shown + (", ..." if len(items) > SHOWN_PROBLEMS else "")
