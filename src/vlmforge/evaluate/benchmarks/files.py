"""Reading benchmark files: JSON, JSON lines and TSV, every problem reported with the file (and line)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError


def _exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}", hint="check the task's path in the eval recipe")


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path`` (a ``what``, e.g. "VQAv2 questions file")."""
    _exists(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_jsonl(path: Path, what: str) -> list[tuple[int, Any]]:
    """(line number, JSON value) for each non-empty line of ``path``."""
    _exists(path, what)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    if not rows:
        raise UserError(f"{path}: no entries", hint=f"a {what} has one JSON object per line")
    return rows


def read_tsv(path: Path, what: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(first line, row by column name) for each row of a tab-separated file with a header line, quoted
    as pandas writes it (a field holding a tab, newline or quote is quoted): MMBench's TSVs are written
    and read (LLaVA's ``pd.read_table``) with pandas, and their hints can span lines."""
    _exists(path, what)
    csv.field_size_limit(2**31 - 1)  # base64 images are longer than csv's default field limit
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        absent = [name for name in required if name not in (reader.fieldnames or [])]
        if absent:
            raise UserError(f"{path}: missing column(s) {', '.join(absent)}", hint=f"a {what} has {required}")
        rows, start = [], reader.line_num + 1
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
        return rows
