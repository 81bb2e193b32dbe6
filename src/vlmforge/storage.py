"""Files a run writes, written so that a crash never leaves a half-written one in place: atomic files
(written next to their destination, then renamed), appended JSON lines, step checkpoints (names,
listing, checks, pruning, atomic replacement), the weights files a finished run leaves behind, and
``DiskFull``: a write that failed for lack of space, its temporary file removed."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_CKPT = re.compile(r"^step-(\d{8})\.ckpt$")  # a file, or a folder under sharded strategies
GATHERED_WEIGHTS = "final-weights.ckpt"  # full weights of a sharded run, gathered for evaluation
WEIGHTS = "model.safetensors"  # plain weights (LoRA merged) of a finetune stage or an align run


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete step checkpoints, oldest first. Temporary (in-flight) files never match."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or a step checkpoint folder written by a sharded strategy."""
    return path.is_file() or (path.is_dir() and _CKPT.match(path.name) is not None)


def checkpoint_damage(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a few words), or ``None`` when torch opens it weights-only
    (this guards against files damaged after writing). A folder (sharded strategies) needs its metadata:
    Lightning's ``meta.pt`` (FSDP) or DeepSpeed's ``latest``."""
    import torch

    if path.is_dir():
        if (path / "latest").is_file():
            return None
        if not (path / "meta.pt").is_file():
            return "a checkpoint folder without meta.pt or latest"
        path = path / "meta.pt"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if not zipfile.is_zipfile(path):  # torch's format is a zip archive, its index at the very end
            return "not a whole checkpoint archive (cut short or overwritten)"
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        lines = str(error).strip().splitlines()
        return f"torch cannot open it: {(lines[0] if lines else type(error).__name__)[:160]}"
    return None


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    for stale in list_checkpoints(directory)[:-keep_last]:
        remove_path(stale)


def remove_path(path: Path) -> None:
    """Delete a checkpoint file or folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file, or every file of a folder and the folders themselves, to disk."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: next to it (same file system, so the
    rename is atomic and nothing passes through $TMPDIR); listings never match the name."""
    return path.with_name(f".{path.name}.tmp")


def replace_path(tmp: Path, path: Path) -> None:
    """Move a fully written checkpoint (file or folder) into place. A file replaces a file atomically; when
    a folder is involved (a step saved again after resuming from an earlier one), the old checkpoint is
    first moved aside, so ``path`` never holds a mix of the two."""
    if path.exists() and (tmp.is_dir() or path.is_dir()):
        aside = path.with_name(f".{path.name}.old")
        remove_path(aside)
        os.replace(path, aside)
        os.replace(tmp, path)
        remove_path(aside)
        return
    os.replace(tmp, path)


def refuse_overwrite(paths: list[Path], overwrite: bool) -> None:
    """Refuse to replace files the user already has, unless asked to (``--force``)."""
    from vlmforge.errors import UserError

    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise UserError(
            f"would overwrite {', '.join(existing)}", hint="choose another --launch-file, or pass --force"
        )


def finite_json(payload: Any) -> Any:
    """``payload`` with every non-finite float (NaN, infinity) as None: JSON has no such numbers, and strict
    parsers (JavaScript, jq, Go) refuse the ``NaN`` that Python's json writes by default."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: finite_json(value) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [finite_json(value) for value in payload]
    return payload


def json_text(payload: Any, indent: int | None = None) -> str:
    """Strict JSON (non-finite numbers as null); objects JSON does not know are written as strings."""
    return json.dumps(finite_json(payload), indent=indent, default=str, allow_nan=False)


class DiskFull(Exception):
    """A write failed for lack of space (ENOSPC, or EDQUOT: over quota). The file being written was removed
    (or, appended to, cut back), so what was there before is intact. A training verb adds the run directory
    and its newest intact checkpoint (``vlmforge.runs.lifecycle.records_disk_full``)."""

    def __init__(self, path: Path | None, detail: str = "No space left on device") -> None:
        self.path, self.detail = path, detail
        self.run_dir: Path | None = None
        self.intact: Path | None = None  # the newest checkpoint a resumed run would start from
        self.recorded = False  # result.json says so
        super().__init__(self.message)

    @property
    def message(self) -> str:
        target = f" while writing {self.path}" if self.path else ""
        return f"disk full{target}: {self.detail}"


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# How Rust's std::io::Error shows them (safetensors raises its own exception type with this text)
_RUST_NO_SPACE = re.compile(rf"\(os error ({'|'.join(str(n) for n in _NO_SPACE)})\)")


def no_space(error: BaseException) -> OSError | None:
    """The out-of-space error behind ``error`` (itself, or an exception it was raised from), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        if not isinstance(current, OSError) and (found := _RUST_NO_SPACE.search(str(current))):
            return OSError(int(found.group(1)), os.strerror(int(found.group(1))))
        current = current.__cause__ or current.__context__
    return None


def disk_full(error: BaseException, path: Path | None = None) -> DiskFull | None:
    """``error`` as ``DiskFull`` when it comes from a lack of space (``path``: what was being written)."""
    if isinstance(error, DiskFull):
        return error
    cause = no_space(error)
    if cause is None:
        return None
    written = path or (Path(cause.filename) if isinstance(cause.filename, str | os.PathLike) else None)
    return DiskFull(written, cause.strerror or os.strerror(cause.errno or errno.ENOSPC))


@contextmanager
def writing(path: Path, sync: bool = True) -> Iterator[Path]:
    """Write ``path`` atomically: the body writes the temporary path it is given (next to ``path``), which
    is then flushed to disk (``sync``) and renamed into place. Whatever fails, the temporary file is
    removed; a failure for lack of space is raised as ``DiskFull``."""
    tmp = temporary_path(path)
    try:
        yield tmp
        if sync:
            fsync_path(tmp)
        replace_path(tmp, path)
    except BaseException as error:
        remove_path(tmp)
        full = disk_full(error, path)
        if full is not None and full is not error:
            raise full from error
        raise


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (see ``writing``)."""
    with writing(path, sync=False) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    """Write strict JSON atomically (temporary file next to it + rename)."""
    write_text(path, json_text(payload, indent=2) + "\n")


def write_json_directly(path: Path, payload: Any) -> bool:
    """Best effort, for a record of a failure on a full disk: write a small JSON file in place, with no
    temporary copy to make room for. When even that fails, no partial file is left; returns whether the
    file was written."""
    try:
        with path.open("w", encoding="utf-8") as handle:
            handle.write(json_text(payload, indent=2) + "\n")
    except OSError:
        path.unlink(missing_ok=True)
        return False
    return True


def append_line(path: Path, line: str) -> None:
    """Append one line (a JSON record) to a log. When the disk is full the file is cut back to its earlier
    length, so it never ends in half a line, and ``DiskFull`` is raised."""
    size = path.stat().st_size if path.exists() else 0
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")
    except OSError as error:
        full = disk_full(error, path)
        if full is None:
            raise
        if path.exists():
            os.truncate(path, size)
        raise full from error


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def is_completed(directory: Path, outcome: str = "result.json") -> bool:
    """A run (or stage) whose outcome file says it completed (an unreadable one says nothing)."""
    result = directory / outcome
    try:
        return result.is_file() and read_json(result).get("status") == "completed"
    except (OSError, ValueError, AttributeError):
        return False
