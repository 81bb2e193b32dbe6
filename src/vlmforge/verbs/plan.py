"""`vlmforge plan`: GPU count, time, memory and cost for a recipe, before any GPU is rented.

Four modes: a recipe's plan over accelerators x GPU counts (``run``, optionally after ``calibrate``,
which times real steps here first, and drawn by ``plot``); ``refit`` learns this machine's utilisation
from finished runs; ``published`` predicts published training runs next to their reported figures.
The planning itself lives in ``vlmforge.planning``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError
from vlmforge.planning import calibrate as calibration
from vlmforge.planning import estimate
from vlmforge.planning.estimate import PlanResult, plan_recipe
from vlmforge.planning.published import compare_published
from vlmforge.runs.artifacts import with_planned_model


def run(
    recipe: TrainingRecipe,
    accelerators: list[str] | None = None,
    counts: list[int] | None = None,
    budget_usd: float | None = None,
    deadline_hours: float | None = None,
    catalog_path: Path | None = None,
) -> PlanResult:
    """Plan every accelerator x GPU count (an align recipe's model is read from its from_run)."""
    return plan_recipe(
        with_planned_model(recipe), accelerators, counts, budget_usd, deadline_hours, catalog_path
    )


def limit_problems(
    counts: list[int] | None, budget_usd: float | None, deadline_hours: float | None
) -> list[UserError]:
    """The GPU counts, budget and deadline that make no sense, each naming its flag (checked first)."""
    return estimate.limit_problems(counts, budget_usd, deadline_hours)


def calibrate(recipe: TrainingRecipe) -> calibration.Calibration:
    """Time real steps of the recipe's costliest phase here; later plans use the measured utilisation."""
    return calibration.calibrate(with_planned_model(recipe))


def refit(runs_dir: Path) -> list[calibration.Calibration]:
    """This machine's utilisation from the finished runs under ``runs_dir``."""
    return calibration.refit(runs_dir)


def published(path: Path, catalog_path: Path | None = None) -> dict[str, Any]:
    """Predictions for every row of a published-runs CSV, with the median absolute % error."""
    return compare_published(path, catalog_path)


def plot(result: PlanResult, path: Path) -> Path:
    """Cost vs wall-clock time, one line per accelerator through its GPU counts (log-log PNG); a star marks
    the pick (the fastest configuration costing at most 1.25x the cheapest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in dict.fromkeys(row.accelerator for row in result.rows):
        rows = [row for row in result.rows if row.accelerator == name and row.fits]
        if not rows:
            continue
        axis.plot([r.wall_hours for r in rows], [r.usd for r in rows], marker="o", label=name)
        for row in rows:
            axis.annotate(
                f"{row.count}",
                (row.wall_hours, row.usd),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    if result.pick is not None:
        chosen = result.rows[result.pick]
        axis.scatter(
            [chosen.wall_hours], [chosen.usd], s=160, marker="*", color="black", zorder=3, label="pick"
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("wall-clock hours")
    axis.set_ylabel("cost (USD)")
    axis.set_title(f"{result.name}: {result.total_flops:.2e} FLOPs (labels: GPU count)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
