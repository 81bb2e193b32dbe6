"""Image files named on a command line: files, folders (every image file below them, sorted) and glob
patterns (``'photos/*.jpg'``, ``'shots/**/*.png'``), in the order given, each file once."""

from __future__ import annotations

import glob
from pathlib import Path

from vlmforge.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
GLOB_CHARS = ("*", "?", "[")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def folder_images(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (by suffix; hidden files and folders skipped), sorted."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and is_image_name(path)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def expand(argument: str) -> list[Path]:
    """The image files one argument names: a file as given (whatever its suffix: it was asked for), the
    image files below a folder, or the image files and folders a glob pattern matches."""
    path = Path(argument)
    if path.is_dir():
        return folder_images(path)
    if path.is_file():
        return [path]
    if not any(char in argument for char in GLOB_CHARS):
        return []
    found: list[Path] = []
    for match in sorted(glob.glob(argument, recursive=True)):
        matched = Path(match)
        if matched.is_dir():
            found += folder_images(matched)
        elif matched.is_file() and is_image_name(matched):
            found.append(matched)
    return found


def find_images(arguments: list[str]) -> list[Path]:
    """Every image file the arguments name, each once, in argument order; an argument naming none is an
    error listing all such arguments."""
    files: list[Path] = []
    empty: list[str] = []
    for argument in arguments:
        found = expand(argument)
        if not found:
            empty.append(argument)
        files += found
    if empty:
        shown = ", ".join(repr(a) for a in empty[:5]) + (
            f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        )
        raise UserError(
            f"no image files found for {shown}",
            hint=f"give image files, folders holding images ({', '.join(IMAGE_SUFFIXES)}) or quoted glob "
            "patterns such as 'photos/*.jpg'",
        )
    if not arguments:
        raise UserError("give at least one image file, folder or glob pattern")
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique
