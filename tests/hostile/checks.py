"""Hostile input and faults, each tried through the real CLI as a careless or unlucky user would. Every case
asserts the exit code, the message, that no traceback was printed, and the file-system state afterwards
(nothing written outside the run directory, no half-written files)."""

from __future__ import annotations

from pathlib import Path


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


def files_under(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to compare a folder before and after a refused command."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def leftovers(root: Path) -> list[str]:
    """Half-written files a crash could leave behind (``*.tmp``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp"))
