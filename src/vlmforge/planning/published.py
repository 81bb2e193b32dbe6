"""`vlmforge plan --published FILE.csv` (or `--published bundled`): predict the runs of a published-runs CSV
with the fitted time model and compare with the figures they report. A row with an unusable number
(negative, zero, NaN, infinite, not a number) is skipped with its reason and never enters the median error;
a row that cannot be predicted says why."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from vlmforge.planning.accelerators import Accelerator, load_catalog
from vlmforge.planning.csvfile import CsvRow, number_problem
from vlmforge.planning.prior import (
    BUNDLED_RUNS,
    EXCLUDED_BOUNDS,
    PublishedRun,
    evaluate_row,
    load_time_model,
    predict_hours,
    read_runs,
    samples_per_device_hour,
)
from vlmforge.planning.runflops import LLM_PARAMS, number
from vlmforge.planning.utilisation import TimeModel

# Numeric columns of a published run, checked when given: each above 0 (and at most this, when not None).
NUMERIC_COLUMNS: dict[str, float | None] = {
    "samples_seen": None,
    "accel_count": None,
    "wall_hours": None,
    "accel_hours": None,
    "image_res": None,
    "text_len": None,
    "global_batch": None,
    "kept_patch_fraction": 1.0,
}


def row_problems(cells: dict[str, str]) -> list[str]:
    """Every given numeric cell of a published run that is not a usable number, as 'column: why'."""
    problems = []
    for column, text in cells.items():  # in the file's column order
        if column in NUMERIC_COLUMNS and text:
            problem = number_problem(text, positive=True, at_most=NUMERIC_COLUMNS[column])
            if problem is not None:
                problems.append(f"{column} {problem}")
    return problems


def no_prediction_reason(run: PublishedRun) -> str:
    """Why a (valid) published run gets no prediction."""
    row = run.row
    if run.flops_per_sample is None:
        llm = row.get("llm_arch", "")
        known_llm = "" if not llm or llm.lower() in LLM_PARAMS else f"; llm_arch {llm!r} is not a known LLM"
        return (
            f"model not recognised (vision_arch {row.get('vision_arch', '')!r}, trained "
            f"{row.get('trained', '') or 'all'!r}{known_llm}): no FLOP count, no prediction"
        )
    if run.shape is None and run.accelerator is not None:
        return "trained parameters unknown for this model: no prediction"
    return (
        f"accel {row.get('accel', '')!r} is not in the accelerator catalog: no prediction "
        "(add it with --catalog FILE.csv)"
    )


def _entry(row: CsvRow) -> dict[str, Any]:
    cells = row.cells
    return {
        "name": cells.get("name"),
        "line": row.line,
        "family": cells.get("family"),
        "accel": cells.get("accel"),
        "accel_count": number(cells.get("accel_count")),
        "flops_per_sample": None,
        "published_accel_hours": number(cells.get("accel_hours")),
        "published_wall_hours": number(cells.get("wall_hours")),
        "predicted_accel_hours": None,
        "predicted_wall_hours": None,
        "bound": cells.get("bound"),
        "scored": cells.get("bound") not in EXCLUDED_BOUNDS,
    }


def compare_row(row: CsvRow, catalog: dict[str, Accelerator], model: TimeModel) -> dict[str, Any]:
    """One published run: its prediction and absolute % error, or a note saying why there is none.
    A run whose bound is 'unreliable' or 'claim' is predicted and shown but not scored."""
    entry = _entry(row)
    problems = row_problems(row.cells)
    if problems:
        return entry | {"skipped": True, "note": f"skipped (line {row.line}): " + "; ".join(problems)}
    run = evaluate_row(row.cells, catalog)
    entry["flops_per_sample"] = run.flops_per_sample
    entry["assumptions"] = run.assumptions
    throughput = samples_per_device_hour(run, model)
    entry["predicted_samples_per_device_hour"] = throughput
    predicted = predict_hours(run, model)
    if predicted is None:
        if throughput is not None:
            note = f"samples_seen blank: predicted {throughput:,.0f} samples per device-hour"
            return entry | {"note": note}
        return entry | {"note": no_prediction_reason(run)}
    entry["predicted_accel_hours"], entry["predicted_wall_hours"] = predicted
    published = entry["published_accel_hours"] or run.published_hours
    entry["published_accel_hours"] = published
    if published is None:
        return entry | {"note": "no published accel_hours to compare with"}
    error = abs(predicted[0] - published) / published * 100
    if not entry["scored"]:
        return entry | {"abs_pct_error": error, "note": f"bound {entry['bound']}: shown, not scored"}
    if run.assumptions:
        return entry | {"abs_pct_error": error, "note": "; ".join(run.assumptions)}
    return entry | {"abs_pct_error": error}


def resolve_runs_path(path: Path) -> Path:
    """``bundled`` names the calibration set that ships with vlmforge."""
    return BUNDLED_RUNS if str(path) == "bundled" else path


def compare_published(path: Path, catalog_path: Path | None = None) -> dict[str, Any]:
    """Predicted accelerator-hours and wall-clock hours for every row of a published-runs CSV, next to
    the published figures, with the median and largest absolute % error over the scored rows."""
    model = load_time_model()
    catalog = load_catalog(catalog_path)
    rows = [compare_row(row, catalog, model) for row in read_runs(resolve_runs_path(path))]
    errors = [row["abs_pct_error"] for row in rows if "abs_pct_error" in row and row["scored"]]
    return {
        "rows": rows,
        "metrics": {
            "median_abs_pct_error": statistics.median(errors) if errors else None,
            "max_abs_pct_error": max(errors) if errors else None,
            "rows_compared": len(errors),
            "rows_skipped": sum(bool(row.get("skipped")) for row in rows),
            "rows": len(rows),
        },
    }
