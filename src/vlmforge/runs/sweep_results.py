"""A sweep's results: one row per child (overrides, status, planned cost and time, final metrics), written
as ``results.csv`` and drawn as ``results.png`` (the chosen metric against each child's planned cost)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vlmforge.runs.sweep_grid import Child, numeric_metrics

# Bookkeeping numbers inside evaluation results, not measurements of the model.
BOOKKEEPING = ("seconds", "samples", "classes", "templates", "step", "steps")


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers worth comparing across children: the final training loss and every evaluation score
    (a finetune run's per-stage losses too)."""
    flat = numeric_metrics(metrics)
    return {
        key: value
        for key, value in flat.items()
        if (key.startswith("eval.") or key.endswith(".loss") or key == "loss")
        and key.rsplit(".", 1)[-1] not in BOOKKEEPING
    }


def result_rows(children: list[Child]) -> list[dict[str, Any]]:
    """One flat row per child: index, name, status, each grid key's value, plan and metrics."""
    rows = []
    for child in children:
        row: dict[str, Any] = {"index": child.index, "name": child.name, "status": child.status}
        row |= dict(override.split("=", 1) for override in child.overrides)
        row |= {"plan_usd": child.plan.get("usd"), "plan_hours": child.plan.get("wall_hours")}
        row |= headline_metrics(child.metrics)
        row["run_dir"] = child.run_dir
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The rows as CSV; a column for every key any row has, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def default_metric(rows: list[dict[str, Any]]) -> str | None:
    """The first evaluation score any child reports, else the training loss; None when nothing ran."""
    keys = list(dict.fromkeys(key for row in rows for key in row if key.startswith("eval.")))
    if keys:
        return keys[0]
    losses = [key for row in rows for key in row if key.endswith("loss")]
    return losses[0] if losses else None


def plot_metric_vs_cost(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> Path | None:
    """``metric`` against each child's planned cost, each point labelled with its child index (PNG);
    None when no child has both numbers."""
    points = [
        (row["plan_usd"], row[metric], row["index"])
        for row in rows
        if row.get("plan_usd") is not None and isinstance(row.get(metric), float)
    ]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    axis.scatter([p[0] for p in points], [p[1] for p in points])
    for usd, value, index in points:
        axis.annotate(f"{index}", (usd, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("planned cost (USD)")
    axis.set_ylabel(metric)
    axis.set_title(f"{title} (labels: child index)")
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
