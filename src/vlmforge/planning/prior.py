"""The time model (``planning/utilisation.py``) fitted on published training runs, and its predictions.

Every row of the published-runs CSV becomes a ``RunShape``: FLOPs per sample counted on the real
architecture (``planning/runflops.py``), samples, global batch, accelerator count and peak, trainable
parameters (what the gradient all-reduce moves), the parameters a sample passes through (what sets the
utilisation) and whether training had to be sharded (model states of 16 bytes per trainable parameter
over half the device memory). A row whose hours cover several stages
of different cost (``runflops.STAGE_SPLITS``) is predicted as the sum of its stages. Rows whose ``bound``
is 'unreliable' or 'claim' are predicted but neither fitted nor scored. ``python -m vlmforge.planning.prior``
refits, prints the parameters and the leave-one-out table, and rewrites ``prior.json`` (what plans use).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError
from vlmforge.planning.accelerators import Accelerator, load_catalog
from vlmforge.planning.csvfile import CsvRow, read_csv
from vlmforge.planning.runflops import (
    number,
    row_flops_per_sample,
    row_model_params,
    row_stages,
    row_trainable_params,
)
from vlmforge.planning.utilisation import (
    FITTED,
    PARAMETER_NAMES,
    RunShape,
    TimeModel,
    abs_pct_error,
    fit,
    leave_one_out,
    staged_accelerator_hours,
    step_time,
)

BUNDLED_RUNS = Path(__file__).with_name("published_runs.csv")  # == published_runs_calibration.csv
PRIOR_FILE = Path(__file__).with_name("prior.json")  # the fitted model vlmforge plans with
REQUIRED_COLUMNS = ("name", "family", "vision_arch", "samples_seen", "accel", "accel_count")
EXCLUDED_BOUNDS = {"unreliable", "claim"}
RUNS_HINT = "use the columns of the bundled published_runs.csv (in vlmforge/planning/)"
# What a row that does not say is assumed to have: one 8-device node, 256 samples per device per step.
DEFAULT_DEVICES = 8
DEFAULT_PER_DEVICE_BATCH = 256
SHARDED_STATE_FRACTION = 0.5  # model states (16 B/param) above this share of memory: FSDP / ZeRO-3


@dataclass
class PublishedRun:
    row: dict[str, str]
    flops_per_sample: float | None
    accelerator: Accelerator | None
    shape: RunShape | None
    published_hours: float | None
    samples_known: bool
    assumptions: list[str] = field(default_factory=list)
    stages: tuple[RunShape, ...] = ()  # what the hours cover, stage by stage; () = the row's shape alone

    @property
    def trained_stages(self) -> tuple[RunShape, ...]:
        return self.stages or ((self.shape,) if self.shape else ())

    @property
    def total_flops(self) -> float | None:
        return self.shape.flops_per_sample * self.shape.samples if self.shape and self.samples_known else None


def read_runs(path: Path) -> list[CsvRow]:
    """The rows of a published-runs CSV, each with its line in the file."""
    return read_csv(path, "published runs file", REQUIRED_COLUMNS, RUNS_HINT)


def published_hours(row: dict[str, str]) -> float | None:
    """accel_hours, or wall_hours x accel_count when only those are given."""
    hours = number(row.get("accel_hours"))
    wall, count = number(row.get("wall_hours")), number(row.get("accel_count"))
    return hours if hours is not None else (wall * count if wall and count else None)


def is_sharded(trainable_params: float, accel: Accelerator) -> bool:
    """Would plain data parallelism overflow: AdamW states of 16 B per parameter (ZeRO §3) vs memory."""
    return trainable_params * 16 > SHARDED_STATE_FRACTION * accel.memory_gb * 1e9


def run_shape(
    row: dict[str, str], flops: float, trainable: float, params: float, accel: Accelerator
) -> tuple[RunShape, list[str]]:
    """The row as the time model sees it, with what had to be assumed (stated, never hidden)."""
    assumed = []
    devices = number(row.get("accel_count"))
    batch = number(row.get("global_batch"))
    if devices is None:
        devices = max(DEFAULT_DEVICES, round((batch or 0) / DEFAULT_PER_DEVICE_BATCH / 8) * 8)
        assumed.append(f"accel_count blank: {devices:g} assumed")
    if batch is None:
        batch = devices * DEFAULT_PER_DEVICE_BATCH
        assumed.append(f"global_batch blank: {batch:g} assumed")
    samples = number(row.get("samples_seen"))
    shape = RunShape(
        flops_per_sample=flops,
        samples=samples if samples else batch,
        global_batch=batch,
        devices=int(devices),
        peak_flops=accel.peak_flops("bf16-mixed"),
        trainable_params=trainable,
        sharded=is_sharded(trainable, accel),
        bandwidth_gb_s=accel.bandwidth_gb_s(int(devices)),
        model_params=params,
    )
    return shape, assumed


def evaluate_row(row: dict[str, str], catalog: dict[str, Accelerator]) -> PublishedRun:
    """A published run as the time model sees it (``shape`` None when its model or device is unknown)."""
    flops = row_flops_per_sample(row)
    trainable, params = row_trainable_params(row), row_model_params(row)
    accel = catalog.get(row.get("accel", "").lower())
    samples_known = bool(number(row.get("samples_seen")))
    if flops is None or trainable is None or params is None or accel is None:
        return PublishedRun(row, flops, accel, None, published_hours(row), samples_known)
    shape, assumed = run_shape(row, flops, trainable, params, accel)
    run = PublishedRun(row, flops, accel, shape, published_hours(row), samples_known, assumed)
    split = row_stages(row)
    return (
        run if len(split) == 1 else replace(run, stages=tuple(stage_shape(stage, accel) for stage in split))
    )


def stage_shape(stage: dict[str, str], accel: Accelerator) -> RunShape:
    """One stage of a row that covers several (its own samples and trained parts)."""
    flops, trainable, params = (
        row_flops_per_sample(stage),
        row_trainable_params(stage),
        row_model_params(stage),
    )
    if flops is None or trainable is None or params is None:
        raise ValueError(f"stage of {stage.get('name')!r} cannot be counted: fix runflops.STAGE_SPLITS")
    return run_shape(stage, flops, trainable, params, accel)[0]


def evaluate_rows(
    rows: list[dict[str, str]], catalog: dict[str, Accelerator] | None = None
) -> list[PublishedRun]:
    catalog = catalog or load_catalog()
    return [evaluate_row(row, catalog) for row in rows]


def used_for_fit(run: PublishedRun) -> bool:
    """A run that can be predicted, reports its hours and whose bound is trusted."""
    return (
        run.shape is not None
        and run.samples_known
        and run.published_hours is not None
        and run.row.get("bound", "") not in EXCLUDED_BOUNDS
    )


def predict_hours(run: PublishedRun, model: TimeModel) -> tuple[float, float] | None:
    """(accelerator-hours, wall-clock hours) predicted for a run; None when it cannot be predicted."""
    if run.shape is None or not run.samples_known:
        return None
    hours = staged_accelerator_hours(model, run.trained_stages)
    return hours, hours / run.shape.devices


def samples_per_device_hour(run: PublishedRun, model: TimeModel) -> float | None:
    """Predicted training throughput per device (the prediction for a run that does not give samples)."""
    if run.shape is None:
        return None
    per_step = step_time(model, run.shape).total_s
    return run.shape.global_batch / run.shape.devices / per_step * 3600


def fit_runs(runs: list[PublishedRun]) -> tuple[TimeModel, list[PublishedRun]]:
    used = [run for run in runs if used_for_fit(run)]
    if len(used) <= FITTED:
        raise UserError(f"only {len(used)} usable published runs: too few to fit the time model")
    return fit([r.trained_stages for r in used], [r.published_hours for r in used]), used  # type: ignore[misc]


def _table_row(run: PublishedRun, model: TimeModel, loo: float | None) -> dict[str, Any]:
    predicted = predict_hours(run, model)
    published = run.published_hours
    entry: dict[str, Any] = {
        "name": run.row.get("name"),
        "bound": run.row.get("bound"),
        "used_for_fit": used_for_fit(run),
        "published_accel_hours": published,
        "predicted_accel_hours": predicted[0] if predicted else None,
        "abs_pct_error": abs_pct_error(predicted[0], published) if predicted and published else None,
        "leave_one_out_abs_pct_error": loo,
        "predicted_samples_per_device_hour": samples_per_device_hour(run, model),
        "assumptions": run.assumptions,
        "shape": asdict(run.shape) if run.shape else None,
    }
    if run.stages:
        entry["stages"] = [asdict(stage) for stage in run.stages]
    return entry


def fit_bundled() -> dict[str, Any]:
    """The time model fitted on the bundled published runs, with every run's prediction and its
    leave-one-out error (runs not used for the fit are predicted by the full fit and not scored)."""
    runs = evaluate_rows([row.cells for row in read_runs(BUNDLED_RUNS)])
    model, used = fit_runs(runs)
    errors = leave_one_out([r.trained_stages for r in used], [r.published_hours for r in used])  # type: ignore[misc]
    loo = {id(run): error for run, error in zip(used, errors, strict=True)}
    return {
        "source": "published_runs.csv (= published_runs_calibration.csv; see published_runs_README.md)",
        "parameters": dict(zip(PARAMETER_NAMES, model.vector(), strict=True)),
        "runs_used": len(used),
        "leave_one_out_median_abs_pct_error": statistics.median(errors),
        "leave_one_out_max_abs_pct_error": max(errors),
        "runs": [_table_row(run, model, loo.get(id(run))) for run in runs],
    }


def load_prior() -> dict[str, Any]:
    """The fitted time model and its evaluation on the published runs (``prior.json``)."""
    return json.loads(PRIOR_FILE.read_text(encoding="utf-8"))


def load_time_model() -> TimeModel:
    parameters = load_prior()["parameters"]
    return TimeModel.from_vector([parameters[name] for name in PARAMETER_NAMES])


def describe(fitted: dict[str, Any]) -> str:
    """The fitted parameters and the per-run table, as ``python -m vlmforge.planning.prior`` prints them."""
    lines = [f"{name} = {value:.6g}" for name, value in fitted["parameters"].items()]
    lines.append(f"{'run':50} {'published':>10} {'predicted':>10} {'err%':>6} {'LOO%':>6}  fit")
    for row in fitted["runs"]:
        cells = [
            _fmt(row["published_accel_hours"]),
            _fmt(row["predicted_accel_hours"]),
            _fmt(row["abs_pct_error"]),
            _fmt(row["leave_one_out_abs_pct_error"]),
        ]
        note = "yes" if row["used_for_fit"] else f"no (bound {row['bound']})"
        if row["predicted_accel_hours"] is None and row["predicted_samples_per_device_hour"]:
            note += (
                f"; samples_seen blank: {row['predicted_samples_per_device_hour']:,.0f} samples/device-hour"
            )
        lines.append(
            f"{row['name'][:50]:50} {cells[0]:>10} {cells[1]:>10} {cells[2]:>6} {cells[3]:>6}  {note}"
        )
    median, worst = fitted["leave_one_out_median_abs_pct_error"], fitted["leave_one_out_max_abs_pct_error"]
    lines.append(f"leave-one-out over {fitted['runs_used']} runs: median {median:.1f}%, max {worst:.1f}%")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


if __name__ == "__main__":  # refit after editing published_runs.csv; rewrites planning/prior.json
    result = fit_bundled()
    PRIOR_FILE.write_text(json.dumps(result, indent=2) + "\n")
    print(describe(result))
