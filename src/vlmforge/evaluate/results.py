"""What an evaluation returns and writes into the run directory's ``eval/`` (or the given output folder):
``<task>.json`` (its metrics), ``<task>.predictions.jsonl`` (one line per evaluated item, for the tasks
that keep them), ``<task>.submission.json`` (a benchmark's answers in its evaluation server's format, where
it has no references here, e.g. VQAv2 test-dev), ``summary.json`` (every task's scalar metrics) and the
task's plots (``plots``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.schema import EvalTask, PretrainRecipe, TrainingRecipe, default_tasks_for, eval_tasks_for
from vlmforge.errors import UserError
from vlmforge.storage import json_text, read_json, write_json, write_text

PREDICTIONS = "predictions"  # a task's metrics key for its per-item predictions (a list of dicts)
SUBMISSION = "submission"  # a task's answers as its evaluation server takes them (a JSON list)
SUMMARY = "summary.json"
GALLERY = "gallery"  # a task's images with what it predicted on them, drawn by ``plots`` (not stored)
ITEM_LISTS = (PREDICTIONS, SUBMISSION, GALLERY)  # kept out of <task>.json, written to files of their own


def without_item_lists(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{task: metrics} without each task's per-item predictions and submission: what result.json,
    ``<task>.json`` and ``vlmforge eval --format json`` keep."""
    return {task: {k: v for k, v in found.items() if k not in ITEM_LISTS} for task, found in metrics.items()}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A task's single-valued metrics (numbers, strings, booleans): what summary.json keeps."""
    return {key: value for key, value in metrics.items() if isinstance(value, int | float | str | bool)}


def predictions_path(folder: Path, task: str) -> Path:
    return folder / f"{task}.{PREDICTIONS}.jsonl"


def submission_path(folder: Path, task: str) -> Path:
    return folder / f"{task}.{SUBMISSION}.json"


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

    def header(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "output": str(self.folder),
        }

    def to_json(self) -> dict[str, Any]:
        return self.header() | {"metrics": without_item_lists(self.metrics)}

    def write(self) -> None:
        """Per task, ``<task>.json`` (the run or model, weights and data named) and, where it kept them,
        ``<task>.predictions.jsonl``, ``<task>.submission.json`` and its plots; then ``summary.json``."""
        from vlmforge.evaluate.plots import write_plots

        out = self.folder
        try:
            out.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise UserError(
                f"cannot write results to {out}: permission denied", hint="give --output DIR"
            ) from None
        header, stored = self.header(), without_item_lists(self.metrics)
        for task, metrics in self.metrics.items():
            write_json(out / f"{task}.json", header | {"metrics": stored[task]})
            rows = metrics.get(PREDICTIONS)
            predictions_path(out, task).unlink(missing_ok=True)  # an earlier evaluation's items
            if rows is not None:
                write_text(predictions_path(out, task), "".join(json_text(row) + "\n" for row in rows))
            submission_path(out, task).unlink(missing_ok=True)
            if metrics.get(SUBMISSION) is not None:
                write_json(submission_path(out, task), metrics[SUBMISSION])
            write_plots(task, metrics, out)
        write_json(out / SUMMARY, self.summary())

    def summary(self) -> dict[str, Any]:
        """{run_dir, checkpoint, data, tasks: {task: scalar metrics}}: this evaluation's tasks, with those
        of an earlier evaluation of the same weights on the same data already in the folder."""
        header = {"run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint), "data": self.data}
        earlier = _read_summary(self.folder / SUMMARY)
        same = all(earlier.get(key) == value for key, value in header.items())
        tasks = dict(earlier.get("tasks", {})) if same else {}
        tasks |= {task: scalar_metrics(metrics) for task, metrics in self.metrics.items()}
        return header | {"tasks": tasks}


def _read_summary(path: Path) -> dict[str, Any]:
    """An earlier summary.json, or {} (none, or one that cannot be read: it is rewritten)."""
    try:
        found = read_json(path)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def default_tasks(recipe: TrainingRecipe) -> list[EvalTask]:
    """The tasks a recipe without an ``eval`` list would have run (a run trained with ``eval=[]``)."""
    if isinstance(recipe, PretrainRecipe):
        return list(default_tasks_for(eval_tasks_for(recipe.model)))
    return list(type(recipe).model_fields["eval"].default_factory())  # type: ignore[misc]
