"""The plan of a recipe: every accelerator x GPU count with hours, dollars, GB per GPU and the layout
that fits, and the estimate every training verb prints (and saves as ``plan.json``) before it starts.

time: the fitted time model (planning/utilisation.py): compute at the utilisation the published runs show
for a model of this size (or the one measured here by --calibrate), plus exposed gradient / parameter
communication over the accelerator's links, plus fixed per-step and per-run overheads;
memory per GPU = model states by strategy + activations measured on the real model (planning/memory.py).
For each accelerator x count, the cheapest layout that fits: strategy, micro-batch, accumulation; each row
names what bounds it (planning/bottleneck.py). The pick: the fastest row costing at most 1.25x the cheapest.
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
from vlmforge.planning.bottleneck import bottleneck, loader_images_per_s_per_gpu, pick
from vlmforge.planning.calibrate import calibration_key, load_calibrations
from vlmforge.planning.layouts import Layout, choose
from vlmforge.planning.phases import PhaseCost, family_of, recipe_model_costs
from vlmforge.planning.prior import load_time_model
from vlmforge.planning.utilisation import RunShape, TimeModel, step_time, utilisation

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
    bottleneck: str | None = None  # compute, memory, communication or data loader (the dominant stage's)
    step_seconds: float | None = None  # the dominant stage's predicted optimizer step
    comm_seconds: float | None = None  # of which exposed communication


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
    mfu_source: str = "time model fitted on published runs"
    rows: list[PlanRow] = field(default_factory=list)
    calibrations: dict[str, float] = field(default_factory=dict)  # accelerator -> calibrated MFU used
    cheapest: int | None = None
    fastest: int | None = None
    pick: int | None = None  # the fastest row costing at most 1.25x the cheapest one
    loader_images_per_s_per_gpu: float = 0.0
    loader_rate_source: str = ""
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
    model = load_time_model()
    main_cost = max(costs, key=lambda cost: cost.total_flops)
    mfu = utilisation(model, main_cost.trainable_params + main_cost.frozen_params)
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
    result.loader_images_per_s_per_gpu, result.loader_rate_source = loader_images_per_s_per_gpu()
    calibrated = load_calibrations()
    for accel in chosen:
        measured = calibrated.get(calibration_key(accel.name, precision, family))
        accel_mfu = float(measured["measured_mfu"]) if measured else None  # type: ignore[arg-type]
        if accel_mfu is not None:
            result.calibrations[accel.name] = accel_mfu
        for count in counts:
            context = RowContext(model, precision, accel_mfu, result.loader_images_per_s_per_gpu)
            result.rows.append(_plan_row(accel, count, costs, context, len(costs) > 1))
    feasible = [i for i, row in enumerate(result.rows) if _within(row, budget_usd, deadline_hours)]
    if feasible:
        result.cheapest = min(feasible, key=lambda i: (result.rows[i].usd, result.rows[i].wall_hours))
        result.fastest = min(feasible, key=lambda i: (result.rows[i].wall_hours, result.rows[i].usd))
        wall = [row.wall_hours for row in result.rows]
        result.pick = pick(wall, [row.usd for row in result.rows], feasible)
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


@dataclass(frozen=True)
class RowContext:
    model: TimeModel
    precision: str
    calibrated_mfu: float | None  # measured here by --calibrate; replaces the fitted utilisation
    loader_images_per_s: float  # per GPU


def stage_shape(
    accel: Accelerator, count: int, cost: PhaseCost, layout: Layout, micro: int, precision: str
) -> RunShape:
    """A planned stage as the time model sees it (recomputation counted in its FLOPs)."""
    accumulate = cost.global_batch // (micro * count)
    return RunShape(
        flops_per_sample=cost.flops_per_sample * layout.compute_factor,
        samples=cost.samples,
        global_batch=cost.global_batch,
        devices=count,
        peak_flops=accel.peak_flops(precision),
        trainable_params=cost.trainable_params,
        sharded=layout.strategy in SHARDED_LAYOUTS,
        bandwidth_gb_s=accel.bandwidth_gb_s(count),
        model_params=cost.trainable_params + cost.frozen_params,
        accumulate=accumulate,
    )


SHARDED_LAYOUTS = ("fsdp", "fsdp-hybrid", "zero3")  # parameters gathered for every micro-batch


def _plan_row(
    accel: Accelerator, count: int, costs: list[PhaseCost], context: RowContext, staged: bool
) -> PlanRow:
    stages: list[dict[str, Any]] = []
    for cost in costs:
        outcome = choose(accel, count, cost, context.precision)
        if isinstance(outcome, str):
            reason = f"stage {cost.name}: {outcome}" if staged else outcome
            return PlanRow(accel.name, count, False, reason, capacity_gb=accel.memory_gb)
        layout, micro, accumulate, gb = outcome
        shape = stage_shape(accel, count, cost, layout, micro, context.precision)
        step = step_time(context.model, shape, context.calibrated_mfu)
        wall = shape.steps * step.total_s / 3600
        memory_limited = accumulate > 1 or layout.checkpointing or layout.offload
        stages.append(
            {
                "name": cost.name,
                "strategy": layout.label,
                "compute_factor": layout.compute_factor,
                "micro_batch": micro,
                "accumulate": accumulate,
                "gb_per_gpu": round(gb, 2),
                "step_seconds": step.total_s,
                "comm_seconds": step.comm_s,
                "bottleneck": bottleneck(
                    step, cost.global_batch / count, memory_limited, context.loader_images_per_s
                ),
                "accel_hours": wall * count,
                "wall_hours": wall,
            }
        )
    main = max(stages, key=lambda stage: stage["accel_hours"])  # the stage that dominates the time
    wall_hours = sum(stage["wall_hours"] for stage in stages) + context.model.per_run_h
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
        wall_hours=wall_hours,
        accel_hours=wall_hours * count,
        usd=wall_hours * count * accel.usd_per_hour,
        stages=stages if staged else [],
        recipe_overrides=_staged_overrides(layout, count, stages)
        if staged
        else layout.recipe_overrides(count, micro),
        bottleneck=main["bottleneck"],
        step_seconds=main["step_seconds"],
        comm_seconds=main["comm_seconds"],
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
        "bottleneck": row.bottleneck,
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
        f" ({estimate['accelerator']}, prior MFU {estimate['mfu_prior']:.0%}, {estimate['bottleneck']}-bound)"
    )
