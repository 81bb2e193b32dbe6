"""What an evaluation returns and writes: ``eval/<task>.json`` in the run directory (or in the given
output folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.schema import EvalTask, PretrainRecipe, TrainingRecipe, default_tasks_for, eval_tasks_for
from vlmforge.errors import UserError
from vlmforge.storage import write_json


@dataclass
class EvalResult:
    run_dir: Path
    checkpoint: Path
    data: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: Path | None = None  # where write() puts <task>.json (default: <run_dir>/eval)

    @property
    def folder(self) -> Path:
        return self.output if self.output is not None else self.run_dir / "eval"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "output": str(self.folder),
            "metrics": self.metrics,
        }

    def write(self) -> None:
        """``<folder>/<task>.json``: one file per task, each with the run (or model), weights and data
        named."""
        out = self.folder
        try:
            out.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise UserError(
                f"cannot write results to {out}: permission denied", hint="give --output DIR"
            ) from None
        header = {k: v for k, v in self.to_json().items() if k != "metrics"}
        for task, metrics in self.metrics.items():
            write_json(out / f"{task}.json", header | {"metrics": metrics})


def default_tasks(recipe: TrainingRecipe) -> list[EvalTask]:
    """The tasks a recipe without an ``eval`` list would have run (a run trained with ``eval=[]``)."""
    if isinstance(recipe, PretrainRecipe):
        return list(default_tasks_for(eval_tasks_for(recipe.model)))
    return list(type(recipe).model_fields["eval"].default_factory())  # type: ignore[misc]
