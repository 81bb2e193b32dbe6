"""Run directories: ``<output_dir>/<name>/<YYYYmmdd-HHMMSS>/`` with the resolved recipe, a manifest,
metrics, checkpoints and evaluation results. Also finds the checkpoint to resume from."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError

RUN_DIR_ENV = "VLMFORGE_RUN_DIR"  # the run directory every rank writes to (set by rank 0 or a launch script)
RESUME_ENV = "VLMFORGE_RESUME_FROM"  # the checkpoint rank 0 resumes from, for the processes it starts
SPAWN_ENV = "VLMFORGE_SPAWNED_BY"  # pid of the rank-0 process that set the two above
_CKPT = re.compile(r"^step-(\d{8})\.ckpt$")  # a file, or a folder under sharded strategies
WEIGHTS_FILE = "final-weights.ckpt"  # full weights of a sharded run, gathered for evaluation
PACKAGES = ("vlmforge", "torch", "lightning", "open_clip_torch", "pydantic", "numpy", "transformers")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete step checkpoints, oldest first. Temporary (in-flight) files never match."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


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


def create_run_dir(output_dir: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = output_dir / name
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        run_dir = base / f"{stamp}{suffix}"
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        (run_dir / "checkpoints").mkdir()
        return run_dir
    raise UserError(f"could not create a fresh run directory under {base}")


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def manifest(seed: int, data_fingerprint: str, devices: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to say what ran where: code version, packages, host, devices, seed, data."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": _git_sha(),
        "packages": versions,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "devices": devices,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
    }


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5
        ).stdout
        return out + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------------------------ resume
@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: Path


def _readable(path: Path) -> bool:
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


def is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or a step checkpoint folder written by a sharded strategy."""
    return path.is_file() or (path.is_dir() and _CKPT.match(path.name) is not None)


def find_resume_point(output_dir: Path, name: str, resume: str) -> ResumePoint | None:
    """``never``: start fresh. ``auto``: the newest run of this name, from its newest readable
    checkpoint, unless it completed or has none (then start fresh). Otherwise a checkpoint file or a
    run directory."""
    if resume == "never":
        return None
    if resume == "auto":
        runs = sorted((p for p in (output_dir / name).glob("*") if p.is_dir()), key=lambda p: p.name)
        if not runs:
            return None
        newest = runs[-1]
        return None if is_completed(newest) else resume_point_in(newest)
    path = Path(resume)
    if path.is_dir() and not is_checkpoint(path):
        point = resume_point_in(path)  # newest first: stops at the first readable one
        if point is None:
            raise UserError(f"--resume {path}: no readable checkpoint in {path / 'checkpoints'}")
        return point
    if not is_checkpoint(path):
        raise UserError(
            f"--resume: {path} is neither a checkpoint nor a run directory",
            hint="use --resume auto, never, a run directory or a step-*.ckpt file or folder",
        )
    if not _readable(path):
        raise UserError(f"--resume: {path} is not a readable checkpoint (damaged or not weights-only)")
    return ResumePoint(run_dir_of(path), path)


def is_completed(run_dir: Path) -> bool:
    result = run_dir / "result.json"
    return result.is_file() and read_json(result).get("status") == "completed"


def resume_point_in(run_dir: Path) -> ResumePoint | None:
    """The newest readable checkpoint of a run directory, if any (of a staged run: in the stage that
    wrote last)."""
    stages = sorted((run_dir / "stages").glob("*/checkpoints"), key=lambda d: d.stat().st_mtime)
    for directory in reversed([run_dir / "checkpoints", *stages]):
        for ckpt in reversed(list_checkpoints(directory)):
            if _readable(ckpt):
                return ResumePoint(run_dir, ckpt)
    return None


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding a checkpoint: <run>/checkpoints/ or <run>/stages/<name>/checkpoints/."""
    parent = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return parent.parent.parent if parent.parent.name == "stages" else parent


def final_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run names in result.json, else its gathered weights (sharded runs), else
    its newest checkpoint file."""
    result_file = run_dir / "result.json"
    if result_file.is_file():
        named = read_json(result_file).get("checkpoint")
        if named and (run_dir / named).is_file():
            return run_dir / named
    weights = run_dir / "checkpoints" / WEIGHTS_FILE
    if weights.is_file():
        return weights
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise UserError(
            f"{run_dir}: no checkpoint found", hint="is this a vlmforge run directory that trained?"
        )
    if found[-1].is_dir():
        raise UserError(
            f"{run_dir}: the newest checkpoint {found[-1].name} is a sharded folder and the run has no "
            f"gathered weights (checkpoints/{WEIGHTS_FILE} is written when a sharded run finishes)",
            hint="resume the run to its end (vlmforge pretrain -c RECIPE --resume RUN_DIR), then evaluate",
        )
    return found[-1]
