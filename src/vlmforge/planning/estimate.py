"""The plan of a recipe: every accelerator x GPU count with hours, dollars, GB per GPU and the layout
that fits, and the estimate every training verb prints (and saves as ``plan.json``) before it starts.

time = FLOPs per sample (counted on the recipe's real model) x samples seen / (GPUs x peak x MFU prior);
memory per GPU = model states by strategy + activations measured on the real model (planning/memory.py).
For each accelerator x count, the cheapest configuration that fits: strategy, micro-batch, accumulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.peft import ContrastiveFinetuneRecipe
from vlmforge.config.schema import AlignRecipe, FinetuneRecipe, TrainingRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.planning.accelerators import Accelerator, load_catalog, lookup, present_accelerator
from vlmforge.planning.calibrate import calibration_key, load_calibrations
from vlmforge.planning.layouts import Layout, choose
from vlmforge.planning.phases import PhaseCost, family_of, recipe_model_costs
from vlmforge.planning.prior import load_prior

DEFAULT_ACCELERATORS = ("a100-40gb", "a100-80gb", "h100-sxm")
DEFAULT_COUNTS = (1, 8, 64)


@dataclass
class PlanRow:
    accelerator: str
    count: int
    fits: bool
    reason: str = ""
    strategy: str | None = None
    compute_factor: float = 1.0
    micro_batch: int | None = None
    accumulate: int | None = None
    gb_per_gpu: float | None = None
    capacity_gb: float = 0.0
    wall_hours: float = 0.0
    accel_hours: float = 0.0
    usd: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)  # per phase when there are several
    recipe_overrides: str | None = None  # the recipe settings that train this row's layout, when one does


@dataclass
class PlanResult:
    verb: str  # pretrain, finetune or align: the command that trains the recipe
    name: str
    family: str
    flops_per_sample: float
    samples_seen: int
    total_flops: float
    mfu: float
    precision: str
    mfu_source: str = "published-runs prior"
    rows: list[PlanRow] = field(default_factory=list)
    calibrations: dict[str, float] = field(default_factory=dict)  # accelerator -> calibrated MFU used
    cheapest: int | None = None
    fastest: int | None = None
    stages: list[PhaseCost] = field(default_factory=list)  # a finetune recipe's stages, in order
    no_pick_reason: str | None = None  # why there is no cheapest/fastest pick, when there is none

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = {"total_flops": self.total_flops, "flops_per_sample": self.flops_per_sample}
        return out


def plan_recipe(
    recipe: TrainingRecipe,
    accelerators: list[str] | None = None,
    counts: list[int] | None = None,
    budget_usd: float | None = None,
    deadline_hours: float | None = None,
    catalog_path: Path | None = None,
) -> PlanResult:
    """Plan every accelerator x GPU count. A multi-stage recipe is planned stage by stage (each its own
    layout and micro-batch: frozen parts change both); hours and dollars are the stages' sums."""
    raise_all(limit_problems(counts, budget_usd, deadline_hours))
    catalog = load_catalog(catalog_path)
    chosen = [lookup(catalog, name) for name in (accelerators or DEFAULT_ACCELERATORS)]
    counts = sorted(set(counts or (*DEFAULT_COUNTS, recipe.world_size)))
    costs = recipe_model_costs(recipe)
    samples = sum(c.samples for c in costs)
    total = sum(c.total_flops for c in costs)
    family = family_of(recipe)
    prior = load_prior()["mfu"]
    mfu = prior.get(family, prior["*"])
    precision = recipe.train.precision
    verb = (
        "finetune"
        if isinstance(recipe, FinetuneRecipe | ContrastiveFinetuneRecipe)
        else "align"
        if isinstance(recipe, AlignRecipe)
        else "pretrain"
    )
    result = PlanResult(verb, recipe.name, family, total / samples, samples, total, mfu, precision)
    if isinstance(recipe, FinetuneRecipe):
        result.stages = costs
    calibrated = load_calibrations()
    for accel in chosen:
        measured = calibrated.get(calibration_key(accel.name, precision, family))
        accel_mfu = float(measured["measured_mfu"]) if measured else mfu  # type: ignore[arg-type]
        if measured:
            result.calibrations[accel.name] = accel_mfu
        for count in counts:
            result.rows.append(_plan_row(accel, count, costs, precision, accel_mfu, len(costs) > 1))
    feasible = [i for i, row in enumerate(result.rows) if _within(row, budget_usd, deadline_hours)]
    if feasible:
        result.cheapest = min(feasible, key=lambda i: (result.rows[i].usd, result.rows[i].wall_hours))
        result.fastest = min(feasible, key=lambda i: (result.rows[i].wall_hours, result.rows[i].usd))
    else:
        result.no_pick_reason = no_pick_reason(result.rows, budget_usd, deadline_hours)
    return result


def limit_problems(
    counts: list[int] | None, budget_usd: float | None, deadline_hours: float | None
) -> list[UserError]:
    """The plan flags that make no sense (a GPU count below 1; a budget or deadline that is not a finite
    number above 0), each naming its flag."""
    problems = []
    if counts is not None and any(count < 1 for count in counts):
        bad = ",".join(str(count) for count in counts if count < 1)
        problems.append(
            UserError(f"--gpus {bad}: GPU counts must be whole numbers from 1", hint="e.g. --gpus 1,8,64")
        )
    for flag, value, example in (
        ("--budget-usd", budget_usd, "--budget-usd 5000"),
        ("--deadline-hours", deadline_hours, "--deadline-hours 48"),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(
                UserError(f"{flag} {value:g}: must be a finite number above 0", hint=f"e.g. {example}")
            )
    return problems


def _within(row: PlanRow, budget_usd: float | None, deadline_hours: float | None) -> bool:
    return (
        row.fits
        and (budget_usd is None or row.usd <= budget_usd)
        and (deadline_hours is None or row.wall_hours <= deadline_hours)
    )


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.3g}"


def _where(row: PlanRow) -> str:
    return f"{row.accelerator} x {row.count}"


def no_pick_reason(rows: list[PlanRow], budget_usd: float | None, deadline_hours: float | None) -> str:
    """Why no configuration is picked: none fits in memory, or the budget, the deadline or both together
    exclude every one that fits (naming the closest one and the limit it breaks)."""
    fitting = [row for row in rows if row.fits]
    if not fitting:
        return "no configuration fits in GPU memory (each row says why); try more GPUs or larger accelerators"
    cheapest = min(fitting, key=lambda row: (row.usd, row.wall_hours))
    fastest = min(fitting, key=lambda row: (row.wall_hours, row.usd))
    if budget_usd is not None and cheapest.usd > budget_usd:
        return (
            f"the cheapest configuration that fits ({_where(cheapest)}) costs {_usd(cheapest.usd)}, "
            f"above --budget-usd {_usd(budget_usd)}"
        )
    if deadline_hours is not None and fastest.wall_hours > deadline_hours:
        return (
            f"the fastest configuration that fits ({_where(fastest)}) takes {fastest.wall_hours:,.3g} h, "
            f"beyond --deadline-hours {deadline_hours:g}"
        )
    assert budget_usd is not None and deadline_hours is not None  # one limit alone is handled above
    on_time = min((row for row in fitting if _within(row, None, deadline_hours)), key=lambda row: row.usd)
    return (
        f"no configuration meets both limits: the cheapest one within --deadline-hours {deadline_hours:g} "
        f"({_where(on_time)}) costs {_usd(on_time.usd)}, above --budget-usd {_usd(budget_usd)}"
    )


def _plan_row(
    accel: Accelerator, count: int, costs: list[PhaseCost], precision: str, mfu: float, staged: bool
) -> PlanRow:
    stages: list[dict[str, Any]] = []
    for cost in costs:
        outcome = choose(accel, count, cost, precision)
        if isinstance(outcome, str):
            reason = f"stage {cost.name}: {outcome}" if staged else outcome
            return PlanRow(accel.name, count, False, reason, capacity_gb=accel.memory_gb)
        layout, micro, accumulate, gb = outcome
        hours = cost.total_flops * layout.compute_factor / (mfu * accel.peak_flops(precision) * 3600)
        stages.append(
            {
                "name": cost.name,
                "strategy": layout.label,
                "compute_factor": layout.compute_factor,
                "micro_batch": micro,
                "accumulate": accumulate,
                "gb_per_gpu": round(gb, 2),
                "accel_hours": hours,
                "wall_hours": hours / count,
            }
        )
    main = max(stages, key=lambda stage: stage["accel_hours"])  # the stage that dominates the time
    accel_hours = sum(stage["accel_hours"] for stage in stages)
    return PlanRow(
        accel.name,
        count,
        True,
        strategy=" / ".join(stage["strategy"] for stage in stages),
        compute_factor=main["compute_factor"],
        micro_batch=main["micro_batch"],
        accumulate=main["accumulate"],
        gb_per_gpu=max(stage["gb_per_gpu"] for stage in stages),
        capacity_gb=accel.memory_gb,
        wall_hours=accel_hours / count,
        accel_hours=accel_hours,
        usd=accel_hours * accel.usd_per_hour,
        stages=stages if staged else [],
        recipe_overrides=_staged_overrides(layout, count, stages)
        if staged
        else layout.recipe_overrides(count, micro),
    )


def _staged_overrides(layout: Layout, count: int, stages: list[dict[str, Any]]) -> str | None:
    """A staged recipe has one ``train.strategy`` for every stage: when all stages chose the same layout,
    it and each stage's micro-batch (``stages.<i>.micro_batch_size``); otherwise no single setting."""
    if len({stage["strategy"] for stage in stages}) > 1:
        return None
    micro = " ".join(f"stages.{i}.micro_batch_size={stage['micro_batch']}" for i, stage in enumerate(stages))
    return f"{layout.recipe_overrides(count)} {micro}"


# ------------------------------------------------------------------------------ before every run
def pre_run_estimate(recipe: TrainingRecipe) -> dict[str, Any]:
    """What the run will cost on the devices it is about to use: printed and saved as plan.json."""
    device, catalog_name = present_accelerator(recipe)
    world = recipe.world_size
    estimate: dict[str, Any] = {"device": device, "devices": world, "accelerator": catalog_name}
    if catalog_name is None:
        costs = recipe_model_costs(recipe)
        samples, total = sum(c.samples for c in costs), sum(c.total_flops for c in costs)
        estimate |= {"flops_per_sample": total / samples, "samples_seen": samples, "total_flops": total}
        return estimate
    result = plan_recipe(recipe, [catalog_name], [world])
    row = result.rows[0]
    estimate |= {
        "flops_per_sample": result.flops_per_sample,
        "samples_seen": result.samples_seen,
        "total_flops": result.total_flops,
        "mfu_prior": result.mfu,
        "fits": row.fits,
        "reason": row.reason,
        "wall_hours": row.wall_hours,
        "usd": row.usd,
        "gb_per_gpu": row.gb_per_gpu,
        "suggested_strategy": row.strategy,
        "suggested_overrides": row.recipe_overrides,
        "suggested_micro_batch": row.micro_batch,
    }
    return estimate


def describe_estimate(estimate: dict[str, Any]) -> str:
    head = (
        f"plan: {estimate['flops_per_sample'] / 1e9:,.3g} GFLOPs/sample"
        f" x {estimate['samples_seen']:,} samples "
        f"= {estimate['total_flops']:.3g} FLOPs on {estimate['devices']} x {estimate['device']}"
    )
    if estimate.get("accelerator") is None:
        return head + " (not in the accelerator catalog: no time or cost estimate)"
    if not estimate["fits"]:
        return head + f"; does not fit: {estimate['reason']}"
    return head + (
        f"; about {estimate['wall_hours']:,.3g} h, ${estimate['usd']:,.0f}, "
        f"{estimate['gb_per_gpu']:.1f} GB/GPU"
        f" ({estimate['accelerator']}, prior MFU {estimate['mfu_prior']:.0%})"
    )
