"""Rich renderings of verb results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def eval_table(console: Console, metrics: dict[str, dict[str, Any]], title: str = "evaluation") -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for task, values in metrics.items():
        for key, value in values.items():
            if key in ("seconds", "samples", "classes", "templates", "match"):
                continue
            table.add_row(task, key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def pretrain_summary(console: Console, result: Any) -> None:
    train = result.metrics.get("train", {})
    table = Table(title=f"pretrain: {result.status}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("run dir", str(result.run_dir))
    table.add_row("steps", str(result.steps))
    if result.resumed_from:
        table.add_row("resumed from", str(result.resumed_from))
    if "loss" in train:
        table.add_row("final train loss", f"{train['loss']:.4f}")
    if "samples_per_s" in train:
        table.add_row("throughput", f"{train['samples_per_s']:.0f} samples/s")
    if result.checkpoint:
        table.add_row("checkpoint", str(result.checkpoint))
    console.print(table)
    if "eval" in result.metrics:
        eval_table(console, result.metrics["eval"], title="held-out evaluation")
        zeroshot = result.metrics["eval"].get("zeroshot")
        if zeroshot:
            console.print(f"[bold]zero-shot top-1 on held-out data: {zeroshot['top1']:.4f}[/]")


def recipes_table(console: Console, recipes: dict[str, Path]) -> None:
    table = Table(title="shipped recipes")
    table.add_column("name")
    table.add_column("description")
    for name, path in recipes.items():
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        description = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        table.add_row(name, description)
    console.print(table)
