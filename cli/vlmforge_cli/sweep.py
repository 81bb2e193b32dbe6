"""The `sweep` command: a recipe trained over a grid of overrides (plan all, confirm, run or emit, table)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlmforge.errors import UserError
from vlmforge_cli.common import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    ForceOpt,
    FormatOpt,
    OutputFormat,
    OverridesArg,
    RecipeOpt,
    app,
    emit,
    err,
    fail,
    guarded,
    out,
)


@app.command()
def sweep(
    config: RecipeOpt,
    overrides: OverridesArg = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="An axis as key.path=[a,b,...] (repeat for more axes; children: every combination)."
        ),
    ] = None,
    random: Annotated[
        int | None, typer.Option("--random", help="Train N children drawn from the grid instead of all.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --random draw.")] = 0,
    plan_only: Annotated[
        bool, typer.Option("--plan-only", help="Print each child's plan and the total, then stop.")
    ] = False,
    emit_launch: Annotated[
        str | None,
        typer.Option(help="slurm: write a SLURM array script (one task per child) and exit."),
    ] = None,
    launch_file: Annotated[
        Path | None, typer.Option(help="Where --emit-launch writes (default: <out>/sweep-slurm.sh).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Sweep folder (default: <output_dir>/sweeps/<name>); the same command on the same "
            "folder resumes the sweep.",
        ),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option(
            help="Accelerator the costs are planned on (default: plan.accelerator, else a100-80gb)."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Metric of the results plot, e.g. eval.zeroshot.top1 (default: the first eval one)."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Start without asking, whatever the estimated total cost.")
    ] = False,
    force: ForceOpt = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Train a recipe over a grid of overrides: every child is validated and planned first, the total
    cost and time printed (asking above plan.confirm_above_usd), then the children train here one after
    another, each in its own run directory, or --emit-launch slurm writes an array job. Running the same
    command again resumes: finished children are skipped, an interrupted one resumes from its newest
    checkpoint. Writes sweep.json, results.csv and results.png in the sweep folder."""
    from vlmforge.config.shipped import resolve_recipe_path
    from vlmforge.verbs import sweep as verb

    if emit_launch not in (None, "slurm"):
        fail(
            UserError(
                f"--emit-launch {emit_launch!r}: a sweep emits slurm array scripts",
                hint="--emit-launch slurm",
            )
        )
    here = not plan_only and emit_launch is None
    sample = (random, seed) if random is not None else None
    planned = guarded(
        lambda: verb.prepare(
            config, resolve_recipe_path(config), overrides or [], grid or [], out_dir, sample, gpu, here
        )
    )
    if fmt is OutputFormat.table:
        plan_table(out, planned)
    if plan_only:
        emit(fmt, planned.to_json(), lambda: None)
        return
    _confirm(planned, yes)
    if emit_launch == "slurm":
        script = guarded(lambda: verb.emit_slurm(planned, launch_file, force))
        payload = {"launch_script": str(script), "sweep_dir": str(planned.sweep_dir), "metrics": {}}
        emit(fmt, payload, lambda: err.print(f"wrote {escape(str(script))}"))
        return
    status = guarded(lambda: verb.run(planned))
    results = guarded(lambda: verb.write_results(planned, metric))
    emit(fmt, planned.to_json() | {"status": status, "results": results}, lambda: results_table(out, results))
    if status == "preempted":
        err.print("stopped by SIGTERM; run the same command again to resume the sweep", soft_wrap=True)
        raise typer.Exit(EXIT_SIGTERM)
    if status == "interrupted":
        err.print("stopped by Ctrl-C; run the same command again to resume the sweep", soft_wrap=True)
        raise typer.Exit(EXIT_SIGINT)


def _confirm(planned: Any, yes: bool) -> None:
    """Above plan.confirm_above_usd: ask on a terminal; without one, refuse unless --yes."""
    from vlmforge.verbs import sweep as verb

    if yes or not verb.needs_confirmation(planned):
        return
    question = verb.confirmation_question(planned)
    if not sys.stdin.isatty():
        fail(UserError(question.removesuffix("; start?") + ", and no terminal to ask", hint="pass --yes"))
    if not typer.confirm(question, err=True):
        fail(UserError("sweep cancelled before it started; nothing was written", hint="pass --yes"))


def _amount(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def plan_table(console: Console, planned: Any) -> None:
    """One row per child: its overrides and its plan; then the total cost and time."""
    table = Table(title=f"sweep plan: {planned.config} on {planned.accelerator}")
    for column in ("#", "child", "overrides", "FLOPs", "GPUs", "GB/GPU", "wall h", "USD"):
        table.add_column(column, justify="left" if column in ("child", "overrides") else "right")
    for child in planned.children:
        plan = child.plan
        memory = f"{plan['gb_per_gpu']:.1f}" if plan.get("gb_per_gpu") is not None else "-"
        fits = "" if plan["fits"] else " [red]does not fit[/]"
        table.add_row(
            str(child.index),
            escape(child.name),
            escape(" ".join(child.overrides)),
            f"{plan['total_flops']:.3g}",
            str(plan["devices"]),
            memory + fits,
            _amount(plan["wall_hours"]),
            _amount(plan["usd"]),
        )
    console.print(table)
    console.print(
        f"[bold]total:[/] {len(planned.children)} runs, about {_amount(planned.total_hours)} h "
        f"(one after another), ${_amount(planned.total_usd)} on {planned.accelerator}; "
        f"sweep folder {escape(str(planned.sweep_dir))}",
        soft_wrap=True,
        highlight=False,
    )


def results_table(console: Console, results: dict[str, Any]) -> None:
    """One row per child: its grid values, status, planned cost and headline metrics."""
    rows = results["rows"]
    columns = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in ("name", "run_dir")]
    table = Table(title="sweep results")
    for column in columns:
        table.add_column(escape(column), justify="right" if column != "status" else "left")
    for row in rows:
        cells = [row.get(column) for column in columns]
        table.add_row(
            *(f"{c:.4g}" if isinstance(c, float) else escape(str(c if c is not None else "-")) for c in cells)
        )
    console.print(table)
    plot = f", {results['plot']}" if results["plot"] else ""
    console.print(f"wrote {escape(results['csv'])}{escape(plot)}", highlight=False, soft_wrap=True)
