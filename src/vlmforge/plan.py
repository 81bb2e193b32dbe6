"""`vlmforge plan`: GPU count, time, memory and cost for a recipe, before any GPU is rented.

time = FLOPs per sample (counted on the recipe's real model) x samples seen / (GPUs x peak x MFU prior);
memory per GPU = model states by strategy + activations measured on the real model (planning/memory.py).
For each accelerator x count, the cheapest configuration that fits: strategy, micro-batch, accumulation.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.schema import (
    ClipModel,
    FinetuneRecipe,
    PretrainRecipe,
    TrainingRecipe,
)
from vlmforge.errors import UserError
from vlmforge.planning.calibrate import (
    Calibration,
    calibration_key,
    cpu_peak_flops,
    load_calibrations,
    save_calibration,
    time_training_steps,
)
from vlmforge.planning.catalog import Accelerator, load_catalog, lookup
from vlmforge.planning.memory import GPUS_PER_NODE, estimate_memory
from vlmforge.planning.phases import (  # noqa: F401  (re-exported: the planner's model costs)
    Phase,
    PhaseCost,
    phase_cost,
    phases,
    planned_model,
    probe_vocab_size,
    recipe_model_costs,
)

PRIOR_FILE = Path(__file__).parent / "planning" / "prior.json"
DEFAULT_ACCELERATORS = ("a100-40gb", "a100-80gb", "h100-sxm")
DEFAULT_COUNTS = (1, 8, 64)


@dataclass(frozen=True)
class Layout:
    """A way to fit training on the GPUs, with the compute it costs relative to plain DDP."""

    strategy: str
    checkpointing: bool = False
    offload: bool = False

    @property
    def compute_factor(self) -> float:
        # Activation checkpointing recomputes the forward in backward: 4/3 of the FLOPs (Chen et al. 2016).
        return 4 / 3 if self.checkpointing else 1.0

    @property
    def label(self) -> str:
        return self.strategy + ("+offload" if self.offload else "") + ("+ckpt" if self.checkpointing else "")

    def recipe_overrides(self, count: int, micro_batch: int) -> str:
        """The ``vlmforge pretrain`` overrides that train ``count`` GPUs with this layout."""
        nodes, devices = (count // GPUS_PER_NODE, GPUS_PER_NODE) if count % GPUS_PER_NODE == 0 else (1, count)
        parts = [f"train.num_nodes={nodes}", f"train.devices={devices}", *RECIPE_STRATEGY[self.strategy]]
        if self.offload:
            parts.append(
                "train.strategy.offload_optimizer=true"
                if self.strategy.startswith("zero")
                else "train.strategy.cpu_offload=true"
            )
        if self.checkpointing:
            parts.append("train.activation_checkpointing=true")
        return " ".join([*parts, f"train.micro_batch_size={micro_batch}"])


# How each layout the memory model prices (planning/memory.py) is set in a recipe's train.strategy.
RECIPE_STRATEGY = {
    "ddp": ("train.strategy.kind=ddp",),
    "zero2": ("train.strategy.kind=deepspeed", "train.strategy.stage=2"),
    "zero3": ("train.strategy.kind=deepspeed", "train.strategy.stage=3"),
    "fsdp": ("train.strategy.kind=fsdp", "train.strategy.sharding=full"),
    "fsdp-hybrid": ("train.strategy.kind=fsdp", "train.strategy.sharding=hybrid"),
}


# Tried in this order: least communication and recomputation first.
LAYOUTS = (
    Layout("ddp"),
    Layout("zero2"),
    Layout("fsdp-hybrid"),
    Layout("fsdp"),
    Layout("ddp", checkpointing=True),
    Layout("fsdp", checkpointing=True),
    Layout("zero3", checkpointing=True, offload=True),
)
GOOD_MICRO_BATCH = 8  # below this, GPUs run far under the utilisation prior: prefer another layout first


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
    recipe_overrides: str | None = None  # the recipe settings that train this row's layout (one phase)


@dataclass
class PlanResult:
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

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = {"total_flops": self.total_flops, "flops_per_sample": self.flops_per_sample}
        return out


def load_prior() -> dict[str, Any]:
    return json.loads(PRIOR_FILE.read_text(encoding="utf-8"))


def family_of(recipe: TrainingRecipe) -> str:
    """The published-runs family whose utilisation applies: masked patches make CLIP a FLIP ('masked')."""
    from vlmforge.families import family_for

    model = planned_model(recipe)
    if isinstance(model, ClipModel) and model.patch_dropout > 0:
        return "masked"
    return family_for(model).name


def choose(
    accel: Accelerator, count: int, cost: PhaseCost, precision: str
) -> tuple[Layout, int, int, float] | str:
    """Cheapest fitting (layout, micro-batch, accumulation, GB/GPU), or the reason nothing fits.

    Frozen parameters hold only their working copy: no gradients, no optimizer states.
    First pass: every layout at micro-batches >= GOOD_MICRO_BATCH; second pass: down to 1."""
    global_batch = cost.batch_size
    if global_batch % count:
        return f"global batch {global_batch} does not split over {count} GPUs"
    largest = global_batch // count
    smallest_gb = None
    for floor in (min(GOOD_MICRO_BATCH, largest), 1):
        for layout in LAYOUTS:
            micro = largest
            while micro >= floor:
                mem = estimate_memory(
                    cost.trainable_params,
                    cost.frozen_params,
                    cost.activation_bytes_per_sample,
                    micro,
                    precision,
                    layout.strategy,
                    count,
                    activation_checkpointing=layout.checkpointing,
                    cpu_offload=layout.offload,
                )
                smallest_gb = mem.total_gb if smallest_gb is None else min(smallest_gb, mem.total_gb)
                if mem.total_gb <= accel.memory_gb:
                    return layout, micro, global_batch // (micro * count), mem.total_gb
                if micro % 2:
                    break
                micro //= 2
    return f"needs {smallest_gb:.0f} GB/GPU even at micro-batch 1 with offload (has {accel.memory_gb:.0f})"


def run(
    recipe: TrainingRecipe,
    accelerators: list[str] | None = None,
    counts: list[int] | None = None,
    budget_usd: float | None = None,
    deadline_hours: float | None = None,
    catalog_path: Path | None = None,
) -> PlanResult:
    """Plan every accelerator x GPU count. A multi-stage recipe is planned stage by stage (each its own
    layout and micro-batch: frozen parts change both); hours and dollars are the stages' sums."""
    catalog = load_catalog(catalog_path)
    chosen = [lookup(catalog, name) for name in (accelerators or DEFAULT_ACCELERATORS)]
    counts = sorted(set(counts or (*DEFAULT_COUNTS, recipe.world_size)))
    if any(c < 1 for c in counts):
        raise UserError("--gpus: GPU counts must be positive integers")
    costs = recipe_model_costs(recipe)
    samples = sum(c.samples for c in costs)
    total = sum(c.total_flops for c in costs)
    family = family_of(recipe)
    prior = load_prior()["mfu"]
    mfu = prior.get(family, prior["*"])
    precision = recipe.train.precision
    result = PlanResult(recipe.name, family, total / samples, samples, total, mfu, precision)
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
    feasible = [
        i
        for i, row in enumerate(result.rows)
        if row.fits
        and (budget_usd is None or row.usd <= budget_usd)
        and (deadline_hours is None or row.wall_hours <= deadline_hours)
    ]
    if feasible:
        result.cheapest = min(feasible, key=lambda i: (result.rows[i].usd, result.rows[i].wall_hours))
        result.fastest = min(feasible, key=lambda i: (result.rows[i].wall_hours, result.rows[i].usd))
    return result


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
        recipe_overrides=None if staged else layout.recipe_overrides(count, micro),
    )


def plot(result: PlanResult, path: Path) -> Path:
    """Cost vs wall-clock time, one line per accelerator through its GPU counts (log-log PNG)."""
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


# ------------------------------------------------------------------------------------ calibration
def calibrate(recipe: TrainingRecipe, micro_batch: int | None = None, steps: int = 6) -> Calibration:
    """Time real steps of the recipe's model here (its costliest phase: the stage that dominates a
    finetune); save the measured MFU as this device's prior."""
    import torch

    _, catalog_name = present_accelerator(recipe)
    family = family_of(recipe)
    candidates = phases(recipe)
    costs = [phase_cost(phase) for phase in candidates]
    costliest = max(range(len(costs)), key=lambda i: costs[i].total_flops)
    phase, flops = candidates[costliest], costs[costliest].flops_per_sample
    micro = micro_batch or phase.micro_batch
    if catalog_name is None:
        device, name, peak = "cpu", f"cpu-{torch.get_num_threads()}t", cpu_peak_flops()
    else:
        device, name = "cuda", catalog_name
        peak = lookup(load_catalog(), catalog_name).peak_flops(recipe.train.precision)
    seconds, peak_gb, loop = time_training_steps(recipe, phase, micro, steps=steps, device=device)
    # A second, half-size point separates fixed per-step overhead from per-sample time.
    half_seconds = time_training_steps(recipe, phase, max(1, micro // 2), steps=steps, device=device)[0]
    per_sample = max(0.0, (seconds - half_seconds) / (micro - max(1, micro // 2))) if micro > 1 else seconds
    # noisy timings can make the fitted line pass below the origin: then all of the time is per sample, so
    # the fit still reproduces the measured step at the calibrated micro-batch
    per_sample = min(per_sample, seconds / micro)
    calibration = Calibration(
        device=name,
        precision=recipe.train.precision,
        family=family,
        micro_batch=micro,
        median_step_seconds=seconds,
        flops_per_step=flops * micro,
        peak_flops=peak,
        measured_mfu=flops * micro / (seconds * peak),
        peak_memory_gb=peak_gb,
        overhead_seconds=seconds - per_sample * micro,
        seconds_per_sample=per_sample,
        loop=loop,
    )
    save_calibration(calibration)
    return calibration


def refit(runs_dir: Path) -> list[Calibration]:
    """Measured utilisation of finished runs (``plan.json`` next to ``actual.json``), saved per device,
    precision and family as the median over runs. CPU runs are scored against this CPU's matmul peak."""
    from vlmforge.config.load import load_recipe, read_yaml
    from vlmforge.config.schema import recipe_verb
    from vlmforge.runs import read_json

    if not runs_dir.is_dir():
        raise UserError(f"--refit: {runs_dir} is not a directory", hint="point it at a runs/ folder")
    samples: dict[tuple[str, str, str], list[tuple[float, Calibration]]] = {}
    cpu_peak: float | None = None
    for plan_file in sorted(runs_dir.rglob("plan.json")):
        run_dir = plan_file.parent
        actual = read_json(run_dir / "actual.json") if (run_dir / "actual.json").is_file() else {}
        step_seconds = actual.get("median_step_seconds")
        if not step_seconds or not (run_dir / "recipe.yaml").is_file():
            continue
        if recipe_verb(read_yaml(run_dir / "recipe.yaml")) != "pretrain":  # one phase per run only
            continue
        estimate = read_json(plan_file)
        recipe = load_recipe("pretrain", run_dir / "recipe.yaml")
        assert isinstance(recipe, PretrainRecipe)
        if estimate.get("accelerator"):
            device = estimate["accelerator"]
            peak = lookup(load_catalog(), device).peak_flops(recipe.train.precision) * recipe.world_size
        else:
            import torch

            cpu_peak = cpu_peak or cpu_peak_flops()
            device, peak = f"cpu-{torch.get_num_threads()}t", cpu_peak
        per_step = estimate["flops_per_sample"] * recipe.data.batch_size
        mfu = per_step / (step_seconds * peak)
        key = (device, recipe.train.precision, family_of(recipe))
        calibration = Calibration(
            device,
            key[1],
            key[2],
            recipe.micro_batch_size,
            step_seconds,
            per_step,
            peak,
            mfu,
            actual.get("peak_memory_bytes", 0) / 1024**3 if actual.get("peak_memory_bytes") else None,
        )
        samples.setdefault(key, []).append((mfu, calibration))
    fitted = []
    for entries in samples.values():
        entries.sort(key=lambda item: item[0])
        median = entries[len(entries) // 2][1]
        save_calibration(median)
        fitted.append(median)
    if not fitted:
        raise UserError(f"--refit: no finished runs with plan.json and actual.json under {runs_dir}")
    return fitted


# ------------------------------------------------------------------------------ published-run mode
def published(path: Path, catalog_path: Path | None = None) -> dict[str, Any]:
    """Predicted accelerator-hours and wall-clock hours for every row of a published-runs CSV, next to
    the published figures, with the median absolute % error over the rows that have both."""
    from vlmforge.planning.prior import evaluate_rows, number, predict_hours, read_runs

    prior = load_prior()["mfu"]
    runs = evaluate_rows(read_runs(path), load_catalog(catalog_path))
    rows, errors = [], []
    for run in runs:
        predicted = predict_hours(run, prior)
        published_hours = number(run.row.get("accel_hours"))
        entry: dict[str, Any] = {
            "name": run.row.get("name"),
            "family": run.row.get("family"),
            "accel": run.row.get("accel"),
            "accel_count": number(run.row.get("accel_count")),
            "flops_per_sample": run.flops_per_sample,
            "published_accel_hours": published_hours,
            "published_wall_hours": number(run.row.get("wall_hours")),
            "predicted_accel_hours": predicted[0] if predicted else None,
            "predicted_wall_hours": predicted[1] if predicted else None,
        }
        if predicted is None:
            entry["note"] = "model or accelerator not recognised: no prediction"
        elif published_hours:
            entry["abs_pct_error"] = abs(predicted[0] - published_hours) / published_hours * 100
            errors.append(entry["abs_pct_error"])
        rows.append(entry)
    return {
        "rows": rows,
        "metrics": {
            "median_abs_pct_error": statistics.median(errors) if errors else None,
            "rows_compared": len(errors),
            "rows": len(rows),
        },
    }


# ------------------------------------------------------------------------------ before every run
# CUDA device-name fragments -> catalog names; first match wins (so "l40s" before "l4").
DEVICE_NAMES = (
    ("h200", "h200"),
    ("h100 pcie", "h100-pcie"),
    ("h100", "h100-sxm"),
    ("a100", "a100"),
    ("l40s", "l40s"),
    ("a10g", "a10g"),
    ("l4", "l4"),
    ("v100", "v100"),
    ("4090", "rtx-4090"),
)


def catalog_name_for(device_name: str, memory_gb: float) -> str | None:
    """The catalog entry of a CUDA device, e.g. 'NVIDIA A100-SXM4-80GB' -> 'a100-80gb'."""
    lowered = device_name.lower()
    for fragment, name in DEVICE_NAMES:
        if fragment in lowered:
            if name == "a100":
                return "a100-80gb" if memory_gb > 50 else "a100-40gb"
            return name
    return None


def present_accelerator(recipe: TrainingRecipe) -> tuple[str, str | None]:
    """(device description, catalog name or None) for the devices this recipe will train on."""
    import torch

    if recipe.train.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu", None
    props = torch.cuda.get_device_properties(0)
    name = recipe.plan.accelerator or catalog_name_for(props.name, props.total_memory / 1024**3)
    return props.name, name


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
    result = run(recipe, [catalog_name], [world])
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
