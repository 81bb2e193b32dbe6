"""Planner accuracy: published runs (leave-one-out) and step time on this machine after calibration.

1. Leave-one-out on the bundled published runs: accelerator-hours predicted by a prior fitted without
   the run (goal: median error <= 25%).
2. For each small recipe: calibrate at a quarter and half of the micro-batch (overhead + per-sample
   fit), predict the step time at the full micro-batch, then measure it (goal: <= 10%).

    OMP_NUM_THREADS=1 python benchmarks/plan_accuracy.py

Writes benchmarks/results/plan_accuracy.json.
"""

from __future__ import annotations

import os
import statistics
import tempfile

from _common import write_result

RECIPES = ("debug/clip-tiny", "demo/clip-digits")


def main() -> None:
    os.environ.setdefault("VLMFORGE_CACHE", tempfile.mkdtemp(prefix="vlmforge-bench-"))
    from vlmforge import plan
    from vlmforge.catalog import find_recipe
    from vlmforge.config.load import load_recipe
    from vlmforge.planning.calibrate import time_training_steps
    from vlmforge.planning.prior import fit_bundled

    fit = fit_bundled()
    loo = (
        f"median {fit['leave_one_out_median_abs_pct_error']}%, max {fit['leave_one_out_max_abs_pct_error']}%"
    )
    print(f"published runs, leave-one-out: {loo} over {fit['runs_used']} runs")
    step_rows = []
    for name in RECIPES:
        recipe = load_recipe("pretrain", find_recipe(name))
        full = recipe.micro_batch_size
        calibration = plan.calibrate(recipe, micro_batch=full // 2, steps=8)  # fits at full/4 and full/2
        predicted = calibration.predict_step_seconds(full)
        measured = statistics.median(time_training_steps(recipe, full, steps=8)[0] for _ in range(3))
        error = abs(predicted - measured) / measured * 100
        step_rows.append(
            {
                "recipe": name,
                "calibrated_micro_batches": [full // 4, full // 2],
                "predicted_micro_batch": full,
                "calibrated_mfu": calibration.measured_mfu,
                "predicted_step_s": predicted,
                "measured_step_s": measured,
                "abs_pct_error": error,
            }
        )
        print(
            f"{name}: predicted {predicted * 1e3:.1f} ms, measured {measured * 1e3:.1f} ms: {error:.1f}% off"
        )
    result = {
        "benchmark": "plan_accuracy",
        "published_runs_leave_one_out": fit,
        "step_time_after_calibration": step_rows,
        "median_step_time_abs_pct_error": statistics.median(r["abs_pct_error"] for r in step_rows),
        "goals": {"published_median_pct": 25, "step_time_pct": 10},
        "memory": "not measured on CPU (no allocator peak); see tests/test_plan.py for activations",
    }
    print(f"-> {write_result('plan_accuracy', result)}")


if __name__ == "__main__":
    main()
