"""`vlmforge sweep`: train a recipe over a grid of overrides, top to bottom.

``--grid`` axes -> children (cartesian product, or a seeded sample) -> every child loaded and validated
(and, to run here, pre-flighted) before anything is written -> each child planned on one accelerator
type -> total cost and time (asking above ``plan.confirm_above_usd``) -> either a SLURM array script
(``emit_slurm``) or each child trained here in turn (``run``) as its own ``vlmforge <verb>`` process,
resumably -> ``sweep.json``, ``results.csv`` and ``results.png``.

Sweep directory: ``sweep.json`` (the command's identity and every child's overrides, run dir, status,
plan and final metrics), ``children/<name>.yaml`` (each child's resolved recipe) and ``<name>.log``,
``<name>/<timestamp>/`` (each child's run directory), ``results.csv``, ``results.png``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.load import dump_recipe, load_recipe
from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.launch import slurm_array_script, training_verb_of
from vlmforge.planning.estimate import plan_recipe
from vlmforge.runs.artifacts import with_planned_model
from vlmforge.runs.child_process import STOPPING, run_recipe_process
from vlmforge.runs.directory import newest_intact_checkpoint
from vlmforge.runs.sweep_grid import (
    FINISHED,
    RECORD,
    Child,
    check_same_sweep,
    child_name,
    expand,
    identity,
    newest_run,
    parse_axes,
    recorded_outcome,
)
from vlmforge.runs.sweep_results import default_metric, plot_metric_vs_cost, result_rows, write_csv
from vlmforge.storage import refuse_overwrite, write_json, write_text

DEFAULT_ACCELERATOR = "a100-80gb"
SET_BY_SWEEP = ("name", "output_dir")  # each child's own: a grid or override may not set them


@dataclass
class Sweep:
    """A validated, planned sweep: what ``run`` trains and ``emit_slurm`` writes."""

    config: str
    name: str  # the base recipe's
    verb: str
    sweep_dir: Path
    base_overrides: list[str]
    accelerator: str
    confirm_above_usd: float
    children: list[Child]
    recipes: list[TrainingRecipe] = field(repr=False)
    sample: dict[str, int] | None = None  # {"n": N, "seed": S} for --random

    @property
    def total_usd(self) -> float:
        return sum(child.plan.get("usd") or 0.0 for child in self.children)

    @property
    def total_hours(self) -> float:
        return sum(child.plan.get("wall_hours") or 0.0 for child in self.children)

    def to_json(self) -> dict[str, Any]:
        return identity(self.config, self.base_overrides, [c.overrides for c in self.children]) | {
            "verb": self.verb,
            "sweep_dir": str(self.sweep_dir),
            "random": self.sample,
            "accelerator": self.accelerator,
            "total_usd": self.total_usd,
            "total_hours": self.total_hours,
            "children": [child.to_json() for child in self.children],
            "metrics": {"total_usd": self.total_usd, "total_hours": self.total_hours},
        }


def prepare(
    config: str,
    recipe_path: Path,
    base_overrides: list[str],
    grid: list[str],
    out: Path | None = None,
    sample: tuple[int, int] | None = None,
    accelerator: str | None = None,
    here: bool = True,
) -> Sweep:
    """Expand, load and validate every child (all problems at once, each naming its child), then plan
    each. ``here``: the children will train on this machine, so the verb's pre-flight checks run too."""
    from vlmforge.config.load import read_yaml
    from vlmforge.config.schema import recipe_verb

    verb = recipe_verb(read_yaml(recipe_path))
    if verb not in ("pretrain", "finetune", "align"):
        raise UserError(f"{config} is a {verb} recipe; a sweep trains pretrain, finetune or align recipes")
    axes = parse_axes(grid)
    set_here = [a.key for a in axes] + [o.partition("=")[0] for o in base_overrides]
    raise_all(
        [
            UserError(f"{key}: each sweep child sets its own", hint="the sweep names children <name>-NNN")
            for key in set_here
            if key in SET_BY_SWEEP
        ]
    )
    points = expand(axes, *(sample or (None, 0)))
    base = load_recipe(verb, recipe_path, base_overrides)
    sweep_dir = (out or base.output_dir / "sweeps" / base.name).resolve()
    recipes = _load_children(verb, recipe_path, base_overrides, points, base.name, sweep_dir)
    check_same_sweep(sweep_dir, identity(config, base_overrides, points))
    if here:
        _preflight_children(recipes, points)
    children = [
        Child(index, recipe.name, point, plan=plan_child(recipe, accelerator or _accelerator(base)))
        for index, (recipe, point) in enumerate(zip(recipes, points, strict=True))
    ]
    return Sweep(
        config,
        base.name,
        verb,
        sweep_dir,
        base_overrides,
        accelerator or _accelerator(base),
        base.plan.confirm_above_usd,
        children,
        recipes,
        {"n": sample[0], "seed": sample[1]} if sample else None,
    )


def _accelerator(base: TrainingRecipe) -> str:
    return base.plan.accelerator or DEFAULT_ACCELERATOR


def _load_children(
    verb: str, path: Path, base: list[str], points: list[list[str]], name: str, sweep_dir: Path
) -> list[TrainingRecipe]:
    """Every child's validated recipe, named ``<name>-NNN`` and training under the sweep directory."""
    recipes, failed = [], []
    for index, point in enumerate(points):
        try:
            recipe = load_recipe(verb, path, [*base, *point])
        except UserError as error:
            failed.append((index, point, error))
            continue
        recipes.append(recipe.model_copy(update={"name": child_name(name, index), "output_dir": sweep_dir}))
    raise_all(_about_children(failed))
    return recipes


def _preflight_children(recipes: list[TrainingRecipe], points: list[list[str]]) -> None:
    from vlmforge.runs.preflight import preflight

    failed = [
        (index, point, problem)
        for index, (recipe, point) in enumerate(zip(recipes, points, strict=True))
        for problem in preflight(recipe)
    ]
    raise_all(_about_children(failed))


def _about_children(failed: list[tuple[int, list[str], UserError]]) -> list[UserError]:
    """One error per distinct problem, naming the children that have it (the first one's overrides in
    full): a grid of a hundred children with one bad value still fits on a screen."""
    groups: dict[tuple[str, str | None], list[tuple[int, list[str]]]] = {}
    for index, point, error in failed:
        groups.setdefault((error.message, error.hint), []).append((index, point))
    problems = []
    for (message, hint), children in groups.items():
        first_index, first_point = children[0]
        if len(children) == 1:
            who = f"sweep child {first_index} ({' '.join(first_point)})"
        else:
            shown = ", ".join(str(i) for i, _ in children[:10]) + (", ..." if len(children) > 10 else "")
            first = f"child {first_index}: {' '.join(first_point)}"
            who = f"sweep children {shown} ({len(children)} of them; {first})"
        problems.append(UserError(f"{who}: {message}", hint=hint))
    return problems


def plan_child(recipe: TrainingRecipe, accelerator: str) -> dict[str, Any]:
    """The planner's row for this child on its own device count of ``accelerator``."""
    result = plan_recipe(with_planned_model(recipe), [accelerator], [recipe.world_size])
    row = next(r for r in result.rows if r.count == recipe.world_size)
    return {
        "accelerator": row.accelerator,
        "devices": row.count,
        "fits": row.fits,
        "reason": row.reason,
        "total_flops": result.total_flops,
        "wall_hours": row.wall_hours,
        "usd": row.usd,
        "gb_per_gpu": row.gb_per_gpu,
    }


def needs_confirmation(sweep: Sweep) -> bool:
    return sweep.total_usd > sweep.confirm_above_usd


def confirmation_question(sweep: Sweep) -> str:
    return (
        f"{len(sweep.children)} runs, estimated ${sweep.total_usd:,.0f} in total: above "
        f"plan.confirm_above_usd (${sweep.confirm_above_usd:,.0f}); start?"
    )


def _write_children(sweep: Sweep) -> list[tuple[TrainingRecipe, Path]]:
    folder = sweep.sweep_dir / "children"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for recipe in sweep.recipes:
        path = folder / f"{recipe.name}.yaml"
        write_text(path, dump_recipe(recipe))
        written.append((recipe, path))
    return written


def emit_slurm(sweep: Sweep, target: Path | None = None, overwrite: bool = False) -> Path:
    """Write the children's recipes, ``sweep.json`` and a SLURM array script (one task per child);
    ``vlmforge sweep`` run again with the same flags afterwards collects their results."""
    first = sweep.recipes[0]
    differing = [
        recipe.name
        for recipe in sweep.recipes
        if (recipe.train.num_nodes, recipe.train.devices, recipe.train.accelerator)
        != (first.train.num_nodes, first.train.devices, first.train.accelerator)
    ]
    if differing:
        raise UserError(
            f"children {', '.join(differing)} use other nodes/devices than {first.name}: one SLURM array "
            "requests the same resources for every task",
            hint="sweep train.devices / train.num_nodes in separate sweeps",
        )
    script = target or sweep.sweep_dir / "sweep-slurm.sh"
    refuse_overwrite([script], overwrite)
    _adopt_record(sweep)
    children = _write_children(sweep)
    script.parent.mkdir(parents=True, exist_ok=True)
    write_text(script, slurm_array_script(f"{sweep.name}-sweep", children))
    script.chmod(0o755)
    write_json(sweep.sweep_dir / RECORD, sweep.to_json())
    return script


def _adopt_record(sweep: Sweep) -> None:
    """Each child's state from its newest run directory (what a previous attempt, here or under SLURM,
    left); ``prepare`` has refused a sweep directory that records another grid."""
    for child in sweep.children:
        run_dir = newest_run(sweep.sweep_dir, child.name)
        if run_dir is not None:
            child.run_dir = str(run_dir)
            child.status, child.metrics = recorded_outcome(run_dir)


def run(sweep: Sweep) -> str:
    """Train each unfinished child here, one after another (a finished one is skipped, an interrupted
    one resumes from its newest checkpoint, or starts over when it saved none); ``sweep.json`` is
    rewritten after each. Returns ``completed``, or the stopping outcome (preempted, interrupted) when
    SIGTERM / Ctrl-C stopped a child: run the same command again to go on."""
    _adopt_record(sweep)
    children = _write_children(sweep)
    record = sweep.sweep_dir / RECORD
    write_json(record, sweep.to_json())
    for child, (recipe, path) in zip(sweep.children, children, strict=True):
        if child.status in FINISHED:
            _say(f"sweep child {child.index} ({child.name}): {child.status} earlier, skipped")
            continue
        child.note = _start_note(sweep.sweep_dir, child)
        _say(f"sweep child {child.index} ({child.name}) {' '.join(child.overrides)}: {child.note}")
        child.status = "running"  # what sweep.json says while it trains (a later invocation reads run dirs)
        write_json(record, sweep.to_json())
        status = run_recipe_process(training_verb_of(recipe), path, sweep.sweep_dir / f"{child.name}.log")
        run_dir = newest_run(sweep.sweep_dir, child.name)
        child.run_dir = str(run_dir) if run_dir else None
        recorded, child.metrics = recorded_outcome(run_dir) if run_dir else ("failed", {})
        child.status = status if status in STOPPING or recorded == "pending" else recorded
        write_json(record, sweep.to_json())
        if status in STOPPING:
            return status
    return "completed"


def _start_note(sweep_dir: Path, child: Child) -> str:
    """How this attempt starts: fresh, from the newest checkpoint of an unfinished run, or over."""
    run_dir = newest_run(sweep_dir, child.name)
    if run_dir is None:
        return "starting"
    checkpoint = newest_intact_checkpoint(run_dir)
    if checkpoint is None:
        return f"restarting ({run_dir.name} saved no checkpoint)"
    return f"resuming from {checkpoint.relative_to(sweep_dir)}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_results(sweep: Sweep, metric: str | None = None) -> dict[str, Any]:
    """``results.csv`` and ``results.png`` (``metric``, default: the first evaluation score, against the
    planned cost); returns the rows, the metric and the files written."""
    rows = result_rows(sweep.children)
    chosen = metric or default_metric(rows)
    csv_path = write_csv(rows, sweep.sweep_dir / "results.csv")
    title = f"{sweep.config}: {len(rows)} runs"
    plot = plot_metric_vs_cost(rows, chosen, sweep.sweep_dir / "results.png", title) if chosen else None
    return {"rows": rows, "metric": chosen, "csv": str(csv_path), "plot": str(plot) if plot else None}
