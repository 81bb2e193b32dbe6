"""`vlmforge eval compare`: evaluated runs (or model folders, or eval output folders) side by side: every
metric of their ``eval/<task>.json`` (those not every run has, marked), and what each run was planned to
cost (``plan.json``) against what it measured (``actual.json``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError, raise_all
from vlmforge.evaluate.results import SUMMARY, scalar_metrics
from vlmforge.storage import read_json

NOT_COMPARED = ("seconds",)  # how long a task took says nothing of the model
COST_ROWS = (
    "plan.wall_hours",
    "plan.gpu_hours",
    "plan.usd",
    "actual.wall_hours",
    "actual.gpu_hours",
    "actual.usd",
)


@dataclass
class EvaluatedRun:
    """One compared folder: its label, the task metrics ("task.metric" -> number), the data each task was
    evaluated on, and its plan/actual cost (None where the run recorded none)."""

    label: str
    folder: Path
    metrics: dict[str, float]
    data: list[str]
    cost: dict[str, float | None] = field(default_factory=dict)


def find_results(path: Path) -> tuple[Path, dict[str, dict[str, Any]]] | None:
    """A folder's evaluation results and where they are: ``<path>/eval`` (a run or model folder) or
    ``path`` itself (an ``eval --output`` folder); None when it holds none."""
    for folder in (path / "eval", path):
        results = task_results(folder) if folder.is_dir() else {}
        if results:
            return folder, results
    return None


def _task_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if p.name != SUMMARY)


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot be read as JSON ({error})", hint="evaluate the run again") from None


def task_results(folder: Path) -> dict[str, dict[str, Any]]:
    """{task: its file's header + metrics}, from ``<task>.json`` (else from summary.json)."""
    found = {}
    for path in _task_files(folder):
        record = _read(path)
        if isinstance(record, dict) and isinstance(record.get("metrics"), dict):
            found[path.stem] = record
    if not found and (folder / SUMMARY).is_file():
        summary = _read(folder / SUMMARY)
        header = {k: v for k, v in summary.items() if k != "tasks"}
        found = {task: header | {"metrics": m} for task, m in summary.get("tasks", {}).items()}
    return found


def numeric_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """ "task.metric" -> value for every number of every task (not booleans, not timings)."""
    return {
        f"{task}.{name}": float(value)
        for task, record in results.items()
        for name, value in scalar_metrics(record["metrics"]).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and name not in NOT_COMPARED
    }


def run_directory(folder: Path, results: dict[str, dict[str, Any]]) -> Path | None:
    """The run directory whose plan.json/actual.json go with the results: the one the results name,
    else the folder above ``eval/``."""
    named = [Path(str(r.get("run_dir"))) for r in results.values() if r.get("run_dir")]
    for candidate in [*named, folder.parent]:
        if (candidate / "plan.json").is_file() or (candidate / "actual.json").is_file():
            return candidate
    return None


def run_cost(run_dir: Path | None) -> dict[str, float | None]:
    """Planned (``plan.json``) and measured (``actual.json``) wall-clock hours, GPU-hours and cost; the
    measured cost at the planned accelerator's catalog price. None where the run recorded nothing."""
    plan = _optional(run_dir, "plan.json")
    actual = _optional(run_dir, "actual.json")
    devices = actual.get("world_size") or _stage_world_size(actual) or plan.get("devices") or 1
    planned_hours = plan.get("wall_hours")
    measured_hours = actual["wall_seconds"] / 3600 if actual.get("wall_seconds") is not None else None
    price = _price_per_hour(plan.get("accelerator"))
    return {
        "plan.wall_hours": planned_hours,
        "plan.gpu_hours": None if planned_hours is None else planned_hours * (plan.get("devices") or 1),
        "plan.usd": plan.get("usd"),
        "actual.wall_hours": measured_hours,
        "actual.gpu_hours": None if measured_hours is None else measured_hours * devices,
        "actual.usd": None if measured_hours is None or price is None else measured_hours * devices * price,
    }


def _optional(run_dir: Path | None, name: str) -> dict[str, Any]:
    if run_dir is None or not (run_dir / name).is_file():
        return {}
    found = _read(run_dir / name)
    return found if isinstance(found, dict) else {}


def _stage_world_size(actual: dict[str, Any]) -> int | None:
    """A finetune run's devices: the most any of its stages used."""
    sizes = [s.get("world_size") for s in actual.get("stages", {}).values() if isinstance(s, dict)]
    return max((s for s in sizes if s), default=None)


def _price_per_hour(accelerator: str | None) -> float | None:
    from vlmforge.planning.accelerators import load_catalog

    return None if accelerator is None else getattr(load_catalog().get(accelerator), "usd_per_hour", None)


def read_run(path: Path) -> EvaluatedRun:
    found = find_results(path)
    if found is None:
        what = "is not a folder" if not path.is_dir() else "holds no evaluation results (eval/<task>.json)"
        raise UserError(f"{path} {what}", hint=f"evaluate it first: vlmforge eval --run {path}")
    folder, results = found
    data = sorted({str(r.get("data")) for r in results.values() if r.get("data")})
    cost = run_cost(run_directory(folder, results))
    return EvaluatedRun(str(path), folder, numeric_metrics(results), data, cost)


@dataclass
class Comparison:
    runs: list[EvaluatedRun]

    @property
    def metric_names(self) -> list[str]:
        """Every metric of any run: the shared ones first, each group in first-seen order."""
        names = list(dict.fromkeys(n for run in self.runs for n in run.metrics))
        return [n for n in names if self.shared(n)] + [n for n in names if not self.shared(n)]

    def shared_rates(self) -> list[str]:
        """The shared metrics whose every value lies in 0-1 (accuracies, recalls): those one plot can hold."""
        return [
            n for n in self.metric_names if self.shared(n) and all(0 <= r.metrics[n] <= 1 for r in self.runs)
        ]

    def shared(self, name: str) -> bool:
        return all(name in run.metrics for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        labels = [run.label for run in self.runs]
        return {
            "runs": [{"label": r.label, "results": str(r.folder), "data": r.data} for r in self.runs],
            "metrics": [
                {
                    "name": n,
                    "shared": self.shared(n),
                    "values": {r.label: r.metrics.get(n) for r in self.runs},
                }
                for n in self.metric_names
            ],
            "cost": [
                {"name": n, "values": dict(zip(labels, self.values(n), strict=True))} for n in COST_ROWS
            ],
        }

    def values(self, name: str) -> list[float | None]:
        """One value per run, of a metric or a cost row."""
        return [run.metrics.get(name, run.cost.get(name)) for run in self.runs]

    def to_csv(self) -> str:
        """metric, shared, one column per run; the cost rows last (shared left empty)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["metric", "shared", *(r.label for r in self.runs)])
        for name in self.metric_names:
            writer.writerow([name, str(self.shared(name)).lower(), *_cells(self.values(name))])
        for name in COST_ROWS:
            writer.writerow([name, "", *_cells(self.values(name))])
        return buffer.getvalue()


def _cells(values: list[float | None]) -> list[str]:
    return ["" if v is None else repr(v) for v in values]


def run(paths: list[Path], plot: Path | None = None) -> Comparison:
    """Read every folder (all problems reported together); with ``plot``, draw the shared metrics."""
    if len(paths) < 2:
        raise UserError(
            "eval compare needs two or more folders", hint="vlmforge eval compare RUN_DIR RUN_DIR ..."
        )
    runs, problems = [], []
    for path in paths:
        try:
            runs.append(read_run(path))
        except UserError as problem:
            problems.append(problem)
    raise_all(problems)
    comparison = Comparison(runs)
    if plot is not None:
        from vlmforge.evaluate.plots import comparison_plot

        rates = comparison.shared_rates()
        if not rates:
            raise UserError(
                "--plot: the runs share no metric between 0 and 1 to draw",
                hint="evaluate them on a common task (vlmforge eval --run DIR tasks=[...])",
            )
        comparison_plot({r.label: [r.metrics[n] for n in rates] for r in runs}, rates, plot)
    return comparison
