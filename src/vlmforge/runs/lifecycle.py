"""How every training verb (pretrain, finetune, align) starts and ends a run.

start: print the plan for the devices about to be used (asking first above ``plan.confirm_above_usd``),
pick the run directory (new, resumed, or given by a launcher), save the plan there, seed everything.
end: a ``RunResult``, written as ``result.json`` with the final weights' path relative to the run; or, when
the disk fills up, a short ``result.json`` (status ``failed``) and ``DiskFull`` naming the newest intact
checkpoint (``records_disk_full``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError
from vlmforge.launch import global_rank
from vlmforge.planning.estimate import describe_estimate, pre_run_estimate
from vlmforge.runs.directory import CURRENT_RUN_DIR, ResumePoint, newest_intact_checkpoint, prepare_run
from vlmforge.storage import (
    DiskFull,
    disk_full,
    refuse_overwrite,
    remove_path,
    write_json,
    write_json_directly,
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class RunResult:
    """What a training verb returns (on global rank 0) and writes as ``result.json``."""

    run_dir: Path
    status: str  # completed | preempted (SIGTERM) | interrupted (SIGINT) | diverged (NaN loss) | failed
    steps: int
    checkpoint: Path | None  # the final weights (a checkpoint, or a finetune stage's / align run's weights)
    resumed_from: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "steps": self.steps,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "metrics": self.metrics,
        }

    def write(self) -> None:
        """``result.json``: the final weights named relative to the run, so that a moved run still finds
        them (``vlmforge.runs.artifacts`` reads it)."""
        write_json(
            self.run_dir / "result.json",
            self.to_json() | {"checkpoint": _inside(self.checkpoint, self.run_dir)},
        )


def _inside(path: Path | None, run_dir: Path) -> str | None:
    """A path inside the run directory as a relative one, so that a moved run still names its files."""
    if path is None:
        return None
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def records_disk_full(run: Callable[P, R]) -> Callable[P, R]:
    """A training verb's ``run`` that, when a write fails for lack of space (a checkpoint, metrics.jsonl,
    any JSON, weights), raises ``DiskFull`` with the run directory and its newest intact checkpoint, after
    rank 0 has removed the run's temporary files and written what fits: a short ``result.json`` with
    status ``failed`` and the reason (written in place, best effort)."""

    @functools.wraps(run)
    def recorded(*args: P.args, **kwargs: P.kwargs) -> R:
        token = CURRENT_RUN_DIR.set(None)
        try:
            return run(*args, **kwargs)
        except Exception as error:
            full = disk_full(error)
            run_dir = CURRENT_RUN_DIR.get()
            if full is None:
                raise
            if run_dir is not None and full.run_dir is None and not is_launched_worker():
                full.run_dir = run_dir
                _record_disk_full(full, run_dir)
            if full is error:
                raise
            raise full from error
        finally:
            CURRENT_RUN_DIR.reset(token)

    return recorded


def _record_disk_full(full: DiskFull, run_dir: Path) -> None:
    """Remove the run's temporary files, find its newest intact checkpoint, write the short result.json."""
    for tmp in sorted(run_dir.rglob(".*.tmp"), reverse=True):  # a folder's contents before the folder
        remove_path(tmp)
    full.intact = newest_intact_checkpoint(run_dir)
    record = {
        "run_dir": str(run_dir),
        "status": "failed",
        "reason": full.message,
        "checkpoint": None,
        "intact_checkpoint": _inside(full.intact, run_dir),
        "metrics": {},
    }
    full.recorded = write_json_directly(run_dir / "result.json", record)


def is_launched_worker() -> bool:
    """Any process but global rank 0 (started by Lightning's launcher, torchrun or srun)."""
    return global_rank() != 0


def estimate_and_confirm(recipe: TrainingRecipe, confirm: Callable[[str], bool] | None) -> dict[str, Any]:
    """Print the plan for the devices about to be used; ask before an expensive run if ``confirm`` is set."""
    estimate = pre_run_estimate(recipe)
    print(describe_estimate(estimate), file=sys.stderr, flush=True)
    usd = estimate.get("usd")
    if confirm is not None and usd is not None and usd > recipe.plan.confirm_above_usd:
        limit = recipe.plan.confirm_above_usd
        question = f"estimated ${usd:,.0f} is above plan.confirm_above_usd (${limit:,.0f}); start?"
        if not confirm(question):
            raise UserError(
                "run cancelled before it started; nothing was written", hint="pass --yes to skip the question"
            )
    return estimate


def start_run(
    recipe: TrainingRecipe, resume: str, confirm: Callable[[str], bool] | None
) -> tuple[Path, ResumePoint | None]:
    """Print the plan (asking first above ``plan.confirm_above_usd``), pick the run directory, save the
    plan there and seed everything: how every training verb starts."""
    estimate = None if is_launched_worker() else estimate_and_confirm(recipe, confirm)
    run_dir, point = prepare_run(recipe, resume)  # only once the user said yes: nothing is written before
    if estimate is not None:
        write_json(run_dir / "plan.json", estimate)
    import lightning.pytorch as pl

    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    return run_dir, point


def emit_deepspeed_configs(
    recipe: TrainingRecipe, target: Path | None, overwrite: bool = False
) -> dict[str, Path]:
    """Write the DeepSpeed config of each fit the recipe trains (one for pretrain and align, one per
    finetune stage), sized by the fit's batch plan, as the Trainer would build it. ``target`` (default
    ``./<name>-deepspeed.json``) names the file; with several stages each gets ``-<stage>`` before the
    suffix; existing files are replaced only with ``overwrite``. Returns {fit name: path}."""
    from vlmforge.planning.phases import phases
    from vlmforge.runs.artifacts import with_planned_model
    from vlmforge.training.deepspeed_config import deepspeed_strategy, emit_deepspeed_config

    deepspeed_strategy(recipe.train)  # refuse other strategies before reading any data
    fits = phases(with_planned_model(recipe))
    target = target or Path(f"{recipe.name}-deepspeed.json")
    paths = {
        fit.name: target if len(fits) == 1 else target.with_name(f"{target.stem}-{fit.name}{target.suffix}")
        for fit in fits
    }
    refuse_overwrite(list(paths.values()), overwrite)
    return {fit.name: emit_deepspeed_config(recipe.train, fit.batch, paths[fit.name]) for fit in fits}
