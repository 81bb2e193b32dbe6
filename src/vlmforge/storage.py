"""Files a run writes, written so that a crash never leaves a half-written one in place: atomic JSON,
step checkpoints (names, listing, pruning, atomic replacement) and the weights files a finished run
leaves behind."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
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


def readable_checkpoint(path: Path) -> bool:
    """A checkpoint that torch can open weights-only (guards against files damaged after writing). A folder
    (sharded strategies) needs its metadata: Lightning's ``meta.pt`` (FSDP) or DeepSpeed's ``latest``."""
    import torch

    if path.is_dir():
        if (path / "latest").is_file():
            return True
        path = path / "meta.pt"
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


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


def write_json(path: Path, payload: Any) -> None:
    """Write strict JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json_text(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def is_completed(directory: Path, outcome: str = "result.json") -> bool:
    """A run (or stage) whose outcome file says it completed."""
    result = directory / outcome
    return result.is_file() and read_json(result).get("status") == "completed"
