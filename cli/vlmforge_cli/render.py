"""Rich renderings of verb results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def eval_table(console: Console, metrics: dict[str, dict[str, Any]], title: str = "evaluation") -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for task, values in metrics.items():
        for key, value in values.items():
            if key in ("seconds", "samples", "classes", "templates", "match", "examples") or isinstance(
                value, list
            ):
                continue
            table.add_row(task, key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for example in metrics.get("captioning", {}).get("examples", [])[:3]:
        console.print(f'caption of {escape(example["key"])}: "{escape(example["caption"])}"')


def pretrain_summary(console: Console, result: Any) -> None:
    train = result.metrics.get("train", {})
    table = Table(title=f"pretrain: {result.status}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("run dir", escape(str(result.run_dir)))
    table.add_row("steps", str(result.steps))
    if result.resumed_from:
        table.add_row("resumed from", escape(str(result.resumed_from)))
    if "loss" in train:
        table.add_row("final train loss", f"{train['loss']:.4f}")
    if "samples_per_s" in train:
        table.add_row("throughput", f"{train['samples_per_s']:.0f} samples/s")
    data = result.metrics.get("data")
    if data:
        line = f"{data['read']:,} read, {data['kept']:,} kept"
        for label, counts in (
            ("dropped", data["dropped"]),
            ("rejected when opened", data["rejected_at_open"]),
        ):
            if counts:
                line += f"; {label}: " + ", ".join(f"{reason} {n}" for reason, n in counts.items())
        table.add_row("data", line)
    if result.checkpoint:
        table.add_row("checkpoint", escape(str(result.checkpoint)))
    console.print(table)
    if "eval" in result.metrics:
        eval_table(console, result.metrics["eval"], title="held-out evaluation")
        zeroshot = result.metrics["eval"].get("zeroshot")
        if zeroshot:
            console.print(f"[bold]zero-shot top-1 on held-out data: {zeroshot['top1']:.4f}[/]")


def data_check_table(console: Console, report: dict[str, Any], shown: int = 20) -> None:
    """Counts per shard, image and caption statistics, throughput, and the first bad samples."""
    shards = Table(title=f"data check: {report['entries']:,} samples in {len(report['shards'])} shard(s)")
    for column in ("shard", "samples", "kept", "dropped"):
        shards.add_column(column, justify="left" if column == "shard" else "right")
    for row in report["shards"]:
        shards.add_row(escape(row["shard"]), *(f"{row[k]:,}" for k in ("entries", "kept", "dropped")))
    console.print(shards)
    summary = Table(show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    dropped = ", ".join(f"{reason} {n}" for reason, n in report["dropped"].items()) or "none"
    summary.add_row("kept", f"{report['kept']:,}")
    summary.add_row(
        "dropped", f"{sum(report['dropped'].values()):,} ({report['bad_fraction']:.2%}): {dropped}"
    )
    for name in ("image_width", "image_height", "caption_chars", "caption_words"):
        values = report[name]
        if values:
            summary.add_row(
                name.replace("_", " "), "min {min:g} / median {median:g} / max {max:g}".format(**values)
            )
    summary.add_row(
        "loader throughput",
        f"{report['images_per_s']:,.0f} images/s per process (decode + transform, measured); "
        f"~{report['estimated_loader_images_per_s']:,.0f} estimated with "
        f"data.num_workers={report['loader_workers']} on {report['cpu_count']} CPUs",
    )
    console.print(summary)
    bad = report["bad_samples"]
    if bad:
        table = Table(
            title=f"bad samples ({len(bad)}; --format json lists all)" if len(bad) > shown else "bad samples"
        )
        for column in ("shard", "key", "reason", "detail"):
            table.add_column(column)
        for drop in bad[:shown]:
            table.add_row(*(escape(str(drop[k])) for k in ("shard", "key", "reason", "detail")))
        console.print(table)


def finetune_summary(console: Console, result: Any, verb: str = "finetune") -> None:
    """A finetune run's stages, or an align run's training (one row), then the held-out evaluation."""
    table = Table(title=f"{verb}: {result.status}")
    for column in ("stage", "steps", "final train loss", "samples/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    stages = result.metrics.get("stages") or {verb: result.metrics.get("train", {})}
    for name, train in stages.items():
        loss, speed = train.get("loss"), train.get("samples_per_s")
        table.add_row(
            escape(name),
            str(train.get("step", "-")),
            f"{loss:.4f}" if loss is not None else "-",
            f"{speed:.0f}" if speed is not None else "-",
        )
    console.print(table)
    console.print(f"run dir: {escape(str(result.run_dir))}")
    data = result.metrics.get("data")
    if data:
        dropped = ", ".join(f"{reason} {n}" for reason, n in data["dropped"].items()) or "none dropped"
        console.print(f"data: {data['read']:,} pairs read, {data['kept']:,} kept ({dropped})")
    if result.checkpoint:
        console.print(f"weights: {escape(str(result.checkpoint))}")
    if "eval" in result.metrics:
        eval_table(console, result.metrics["eval"], title="held-out evaluation")
    if "tuned" in result.metrics:  # a contrastive finetune: the method against the untuned model
        metrics = result.metrics
        console.print(
            f"{escape(metrics['method'])}: top-1 {metrics['tuned']['top1']:.4f} on "
            f"{metrics['classification']['test_images']:,} held-out images "
            f"(zero-shot before tuning: {metrics['zero_shot']['top1']:.4f})"
        )


def recipes_table(console: Console, recipes: dict[str, Path], verbs: dict[str, str]) -> None:
    table = Table(title="shipped recipes (run one with: vlmforge VERB -c NAME)")
    table.add_column("name")
    table.add_column("verb")
    table.add_column("description")
    for name, path in recipes.items():
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        description = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        table.add_row(escape(name), verbs[name], escape(description))
    console.print(table)


def _amount(value: float) -> str:
    """Thousands separators for large values, three significant digits for small ones."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def calibration_line(console: Console, calibration: Any) -> None:
    memory = f", peak {calibration.peak_memory_gb:.1f} GB" if calibration.peak_memory_gb is not None else ""
    console.print(
        f"calibrated on {calibration.device}: {calibration.median_step_seconds * 1000:,.1f} ms per step of "
        f"{calibration.micro_batch} samples = {calibration.measured_mfu:.1%} of peak "
        f"({calibration.peak_flops / 1e12:.2f} TFLOP/s){memory}; saved as this device's utilisation"
    )
    fed = (
        "the recipe's data and vlmforge's callbacks"
        if calibration.loop == "recipe data"
        else "synthetic inputs"
    )
    console.print(f"(steps fed by {fed})")


def plan_table(console: Console, result: Any) -> None:
    per_sample = "GFLOPs per sample (mean over stages)" if result.stages else "GFLOPs per sample"
    console.print(
        f"[bold]{escape(result.name)}[/]: {result.flops_per_sample / 1e9:,.2f} {per_sample} x "
        f"{result.samples_seen:,} samples = {result.total_flops:.3e} FLOPs; "
        f"utilisation prior ({result.family}) {result.mfu:.1%} of peak ({result.precision})"
    )
    console.print(
        f"data loader: {result.loader_images_per_s_per_gpu:,.0f} images/s per GPU "
        f"({result.loader_rate_source})",
        highlight=False,
    )
    for stage in result.stages:
        console.print(
            f"  stage {escape(stage.name)}: {stage.flops_per_sample / 1e9:,.2f} GFLOPs per sample x "
            f"{stage.samples:,} samples = {stage.total_flops:.3e} FLOPs; "
            f"{stage.trainable_params / 1e6:,.1f}M trainable of "
            f"{(stage.trainable_params + stage.frozen_params) / 1e6:,.1f}M parameters"
        )
    for name, mfu in result.calibrations.items():
        console.print(f"{name}: calibrated utilisation {mfu:.1%} used instead of the prior")
    table = Table(title="plan")
    columns = (
        "accelerator",
        "GPUs",
        "wall h",
        "GPU h",
        "USD",
        "GB/GPU",
        "strategy",
        "micro×acc",
        "bound",
        "pick",
    )
    left = ("accelerator", "strategy", "bound", "pick")
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for i, row in enumerate(result.rows):
        if not row.fits:
            cells = [row.accelerator, str(row.count), "-", "-", "-", f"/{row.capacity_gb:.0f}"]
            table.add_row(*cells, "[red]does not fit[/]", "-", "memory", escape(row.reason))
            continue
        picks = (
            ("[bold green]pick[/]", result.pick),
            ("[green]cheapest[/]", result.cheapest),
            ("[cyan]fastest[/]", result.fastest),
        )
        table.add_row(
            row.accelerator,
            str(row.count),
            _amount(row.wall_hours),
            _amount(row.accel_hours),
            _amount(row.usd),
            f"{row.gb_per_gpu:.1f}/{row.capacity_gb:.0f}",
            row.strategy,
            " / ".join(f"{st['micro_batch']}×{st['accumulate']}" for st in row.stages)
            or f"{row.micro_batch}×{row.accumulate}",
            row.bottleneck or "-",
            " ".join(label for label, index in picks if index == i),
        )
    console.print(table)
    if result.no_pick_reason:
        console.print(f"[yellow]no pick:[/] {escape(result.no_pick_reason)}", soft_wrap=True, highlight=False)
    picked = {result.pick: "pick (fastest within 1.25x the lowest cost)"}
    for index, label in picked.items():
        if index is not None:
            row = result.rows[index]
            where = f"{label} ({row.accelerator} x {row.count})"
            if row.recipe_overrides is None:  # stages that want different strategies: see the table
                console.print(f"{where}: the stages need different strategies ({escape(row.strategy or '')})")
                continue
            console.print(
                f"{where}: vlmforge {result.verb} -c RECIPE {escape(row.recipe_overrides)}",
                soft_wrap=True,
                highlight=False,
            )


def _hours(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def published_table(console: Console, report: dict[str, Any]) -> None:
    """Predicted next to published accelerator-hours; a row without an error says why in its note."""
    table = Table(title="published runs: predicted vs published accelerator-hours")
    for column in ("run", "accel", "published", "predicted", "error %", "note"):
        table.add_column(column, justify="left" if column in ("run", "accel", "note") else "right")
    for row in report["rows"]:
        table.add_row(
            escape(str(row["name"])[:48]),
            f"{escape(str(row['accel']))} x {_count(row['accel_count'])}",
            _hours(row["published_accel_hours"]),
            _hours(row["predicted_accel_hours"]),
            _hours(row.get("abs_pct_error")),
            escape(row.get("note", "")),
        )
    console.print(table)
    metrics = report["metrics"]
    median = metrics["median_abs_pct_error"]
    if median is not None:
        console.print(
            f"absolute error: median {median:.1f}%, max {metrics['max_abs_pct_error']:.1f}% over "
            f"{metrics['rows_compared']} scored runs (bound 'unreliable' or 'claim': shown, not scored)"
        )
    if metrics.get("rows_skipped"):
        console.print(
            f"[yellow]{metrics['rows_skipped']} row(s) skipped[/] for unusable numbers (see their notes); "
            "they are not in the median error"
        )


def curate_summary(console: Console, result: Any) -> None:
    table = Table(title=f"curate: {result.kept} of {result.total} samples kept")
    table.add_column("stage")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("dropped (reason: count)")
    for stage in result.stages:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in stage["dropped"].items())
        table.add_row(escape(stage["name"]), str(stage["in"]), str(stage["out"]), escape(reasons))
    console.print(table)
    shards, report = escape(str(result.output / "shards")), escape(str(result.output / "report.html"))
    console.print(f"shards: {shards}  report: {report}")
