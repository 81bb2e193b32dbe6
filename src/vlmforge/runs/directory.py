"""Run directories: ``<output_dir>/<name>/<YYYYmmdd-HHMMSS>/`` with the resolved recipe, a manifest,
metrics, checkpoints and evaluation results; which one a run writes to, and where it resumes from.

Under DDP, Lightning re-launches the command once per extra device; those processes join rank 0's run
directory through ``VLMFORGE_RUN_DIR`` (``vlmforge.launch``).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vlmforge.config.load import dump_recipe, read_yaml
from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError
from vlmforge.launch import RESUME_ENV, RUN_DIR_ENV, SPAWN_ENV, global_rank, launched_world_size
from vlmforge.runs.lock import lock_run_dir
from vlmforge.storage import (
    checkpoint_damage,
    is_checkpoint,
    is_completed,
    list_checkpoints,
    write_text,
)

PACKAGES = ("vlmforge", "torch", "lightning", "open_clip_torch", "pydantic", "numpy", "transformers")

# Fields that may differ between a run and the recipe that resumes it.
# The device layout may change: the data position is kept in global optimizer steps (same global batch).
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_every_steps",
    "train.eval_every_steps",
    "train.record_sample_ids",
    "train.checkpoint",
    "train.devices",
    "train.num_nodes",
    "train.micro_batch_size",
    "train.accelerator",
    "train.strategy",
    "data.num_workers",
    "logger",
    "eval",
    "plan",
)

# Strategies that read each other's checkpoints: Lightning's one file (optimizer states in the optimizer's
# parameter order), FSDP's folders or files (keyed by parameter name, resharded on load), DeepSpeed's ZeRO
# folders (optimizer states partitioned per rank).
CHECKPOINT_FORMAT = {"auto": "lightning", "ddp": "lightning", "fsdp": "fsdp", "deepspeed": "deepspeed"}


# The run directory this process writes to, from the moment ``prepare_run`` has chosen it: where a run
# that fails part-way records it (``runs.lifecycle.records_disk_full``).
CURRENT_RUN_DIR: ContextVar[Path | None] = ContextVar("vlmforge_run_dir", default=None)


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: Path


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
        "git_sha": vlmforge_git_sha(),  # the code that trained
        "workdir_git_sha": _git_sha(Path.cwd()),  # the project it was started from (recipes, data scripts)
        "packages": versions,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "devices": devices,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
    }


def _git(directory: Path, *args: str) -> str | None:
    """``git -C directory ARGS``'s output, or None outside a repository or without git."""
    try:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _git_sha(directory: Path) -> str | None:
    """The commit checked out in the repository holding ``directory`` (``-dirty`` with local changes)."""
    head = _git(directory, "rev-parse", "HEAD")
    if head is None:
        return None
    return head + ("-dirty" if _git(directory, "status", "--porcelain") else "")


def vlmforge_git_sha() -> str | None:
    """vlmforge's own commit when it runs from a checkout (an editable install); None when installed
    from a wheel — even inside someone else's repository (a virtual environment in a project)."""
    package = Path(__file__).resolve().parents[1]
    top = _git(package, "rev-parse", "--show-toplevel")
    return _git_sha(package) if top and Path(top).resolve() / "src" / "vlmforge" == package else None


# ------------------------------------------------------------------------------------------ resume
def find_resume_point(output_dir: Path, name: str, resume: str) -> ResumePoint | None:
    """``never``: start fresh. ``auto``: the newest run of this name, from its newest readable
    checkpoint, unless it completed or has no checkpoint (then start fresh); refused when all its
    checkpoints are damaged. Otherwise a checkpoint file or a run directory."""
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
            raise UserError(f"--resume {path}: no checkpoint in {path / 'checkpoints'}")
        return point
    if not is_checkpoint(path):
        raise UserError(
            f"--resume: {path} is neither a checkpoint nor a run directory",
            hint="use --resume auto, never, a run directory or a step-*.ckpt file or folder",
        )
    damage = checkpoint_damage(path)
    if damage is not None:
        raise UserError(f"--resume: {path} is not a readable checkpoint (damaged: {damage})")
    return ResumePoint(run_dir_of(path), path)


def resume_point_in(run_dir: Path) -> ResumePoint | None:
    """The newest readable checkpoint of a run directory (of a staged run: in the stage that wrote last),
    or ``None`` when it has no checkpoint. Each damaged newer checkpoint passed over is named on stderr
    with the reason; when every checkpoint there is damaged the run is not started over silently:
    ``UserError`` names them."""
    found, damaged = _newest_readable(run_dir)
    if found is None and damaged:
        shown = "; ".join(f"{path.name} ({why})" for path, why in damaged[:5])
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        raise UserError(
            f"cannot resume {run_dir}: every checkpoint in {damaged[0][0].parent} is damaged: {shown}{more}",
            hint="start a new run with --resume never (the default), or resume from another checkpoint "
            "with --resume PATH",
        )
    if found is not None and global_rank() == 0:
        for path, why in damaged:
            print(f"skipped damaged checkpoint {path}: {why}", file=sys.stderr, flush=True)
    return ResumePoint(run_dir, found) if found is not None else None


def newest_intact_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resumed run would start from (``resume_point_in``), without messages."""
    return _newest_readable(run_dir)[0]


def _newest_readable(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest readable checkpoint in the checkpoint folder that was written last (the run's, or a
    stage's), and the newer ones found damaged (path, why)."""
    stages = sorted((run_dir / "stages").glob("*/checkpoints"), key=lambda d: d.stat().st_mtime)
    for directory in reversed([run_dir / "checkpoints", *stages]):
        damaged = []
        for ckpt in reversed(list_checkpoints(directory)):
            why = checkpoint_damage(ckpt)
            if why is None:
                return ckpt, damaged
            damaged.append((ckpt, why))
        if damaged:
            return None, damaged
    return None, []


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding a checkpoint: <run>/checkpoints/ or <run>/stages/<name>/checkpoints/."""
    parent = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return parent.parent.parent if parent.parent.name == "stages" else parent


# ---------------------------------------------------------------------------- which directory
def prepare_run(recipe: TrainingRecipe, resume: str) -> tuple[Path, ResumePoint | None]:
    """Pick the run directory (new, resumed, or given by a launch script) and write the resolved recipe."""
    mine = os.environ.get(SPAWN_ENV) == str(os.getpid())
    if SPAWN_ENV in os.environ and not mine:  # started by our rank 0 through Lightning's launcher
        resume_from = os.environ.get(RESUME_ENV)
        point = ResumePoint(Path(os.environ[RUN_DIR_ENV]), Path(resume_from)) if resume_from else None
        CURRENT_RUN_DIR.set(Path(os.environ[RUN_DIR_ENV]))
        return Path(os.environ[RUN_DIR_ENV]), point
    preset = None if mine else os.environ.get(RUN_DIR_ENV)
    if preset:  # a torchrun / srun script chose one run directory for every rank
        return _join_preset_run(recipe, Path(preset), resume)
    if launched_world_size() > 1:
        raise UserError(
            f"started as {launched_world_size()} processes by torchrun/srun without {RUN_DIR_ENV}: "
            "the ranks cannot agree on a run directory",
            hint="generate the launch script with: vlmforge pretrain -c RECIPE --emit-launch torchrun|slurm",
        )
    point = find_resume_point(recipe.output_dir, recipe.name, resume)
    if point is not None:
        lock_run_dir(point.run_dir)  # before anything is written into it
        check_same_recipe(recipe, point.run_dir)
        run_dir = point.run_dir
    else:
        run_dir = create_run_dir(recipe.output_dir, recipe.name)
        lock_run_dir(run_dir)
    CURRENT_RUN_DIR.set(run_dir)
    write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    os.environ |= {RUN_DIR_ENV: str(run_dir), RESUME_ENV: str(point.checkpoint) if point else ""}
    os.environ[SPAWN_ENV] = str(os.getpid())
    return run_dir, point


def _join_preset_run(recipe: TrainingRecipe, run_dir: Path, resume: str) -> tuple[Path, ResumePoint | None]:
    if is_completed(run_dir):
        raise UserError(f"{RUN_DIR_ENV}={run_dir} holds a completed run", hint="choose a new run directory")
    if resume == "never":
        point = None
    elif resume == "auto":
        point = resume_point_in(run_dir)
    else:
        point = find_resume_point(recipe.output_dir, recipe.name, resume)
    CURRENT_RUN_DIR.set(run_dir)
    if global_rank() == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        lock_run_dir(run_dir)
        if point is not None:
            check_same_recipe(recipe, run_dir)
        write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    return run_dir, point


def check_same_recipe(recipe: TrainingRecipe, run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that trains something else (fields outside
    ``RESUMABLE_CHANGES`` differ) or whose checkpoints the new strategy cannot read."""
    saved_file = run_dir / "recipe.yaml"
    if not saved_file.is_file():
        return
    saved, now = _flatten(read_yaml(saved_file)), _flatten(recipe.model_dump(mode="json"))
    changed = sorted(
        k
        for k in saved.keys() | now.keys()
        if saved.get(k) != now.get(k) and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    )
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise UserError(
            f"cannot resume {run_dir}: the recipe differs from the run's ({shown})",
            hint="resume with the run's own recipe.yaml, or start a new run with --resume never",
        )
    _check_checkpoint_format(saved, recipe, run_dir)


def _check_checkpoint_format(saved: dict[str, Any], recipe: TrainingRecipe, run_dir: Path) -> None:
    before, now = saved.get("train.strategy.kind", "auto"), recipe.train.strategy.kind
    if CHECKPOINT_FORMAT[before] != CHECKPOINT_FORMAT[now]:
        raise UserError(
            f"cannot resume {run_dir} with train.strategy.kind {now}: its checkpoints were written by "
            f"{before}, in a format {now} does not read",
            hint=f"resume with train.strategy.kind={before}",
        )
    devices, nodes = saved.get("train.devices", 1), saved.get("train.num_nodes", 1)
    if now == "deepspeed" and devices * nodes != recipe.world_size:
        raise UserError(
            f"cannot resume {run_dir} on {recipe.world_size} devices: its DeepSpeed ZeRO checkpoints hold "
            f"optimizer states partitioned over {devices * nodes}",
            hint=f"resume with train.devices={devices} train.num_nodes={nodes}",
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): data}
