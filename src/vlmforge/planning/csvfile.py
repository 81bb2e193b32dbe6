"""The planner's CSV files (accelerator catalog, published runs) read strictly: UTF-8 text (a byte-order mark
is allowed), every row with the line of the file it starts on, so that a problem names its line; and the
check of a numeric cell, which says why a value is unusable instead of letting NaN, infinity or a negative
number into a plan."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vlmforge.errors import UserError

UTF8_HINT = "save the file as UTF-8 text (in a spreadsheet: 'CSV UTF-8')"


@dataclass(frozen=True)
class CsvRow:
    line: int  # the line of the file the row starts on (1-based, the header is a line too)
    cells: dict[str, str]  # column -> stripped text; a short row's missing cells are ""


def read_text(path: Path, what: str) -> str:
    """The file as text; not a file or not UTF-8 is the user's error, naming the file and the bad byte."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text: byte offset {exc.start} (0x{data[exc.start]:02x}) {exc.reason}",
            hint=UTF8_HINT,
        ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str, comments: bool, numbers: list[int]) -> Iterator[str]:
    """The lines the CSV parser reads, recording the file line number of each in ``numbers``."""
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if comments and line.startswith("#"):
            continue
        numbers.append(number)
        yield line


def read_csv(
    path: Path, what: str, required: tuple[str, ...], hint: str, comments: bool = False
) -> list[CsvRow]:
    """The rows of a CSV file with a header; ``comments``: lines starting with '#' are skipped. A missing
    required column, or text the CSV parser cannot read, is the user's error naming the file."""
    text = read_text(path, what)
    numbers: list[int] = []
    reader = csv.reader(_lines(text, comments, numbers))
    rows: list[CsvRow] = []
    try:
        header = next((cells for cells in reader if any(c.strip() for c in cells)), [])
        columns = [name.strip() for name in header]
        missing = [name for name in required if name not in columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}", hint=hint)
        while True:
            first_line = len(numbers)  # the next line the parser pulls starts the row
            cells = next(reader, None)
            if cells is None:
                return rows
            if any(cell.strip() for cell in cells):
                padded = [cell.strip() for cell in cells] + [""] * (len(columns) - len(cells))
                rows.append(CsvRow(numbers[first_line], dict(zip(columns, padded, strict=False))))
    except csv.Error as exc:
        line = numbers[-1] if numbers else 1
        raise UserError(f"{path}: line {line}: not readable as CSV ({exc})", hint=hint) from None


def number_problem(text: str, positive: bool = True, at_most: float | None = None) -> str | None:
    """Why a cell is not a usable number (empty, not a number, NaN or infinite, negative, zero where
    ``positive``, above ``at_most``), or None when it is one."""
    if not text:
        return "is empty"
    try:
        value = float(text)
    except ValueError:
        return f"{text!r} is not a number"
    if not math.isfinite(value):
        return f"{text!r} is not a finite number"
    if value < 0 or (positive and value == 0):
        return f"{text} must be {'above 0' if positive else '0 or more'}"
    if at_most is not None and value > at_most:
        return f"{text} must be at most {at_most:g}"
    return None
