"""`vlmforge eval score` (benchmark metrics of predictions made elsewhere) and `vlmforge eval compare`
(evaluated runs side by side, with their planned and measured cost)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from vlmforge_cli.common import FormatOpt, OutputFormat, emit, eval_app, guarded, out

SCORE_TASKS = ("vqav2", "coco_captions", "pope", "multiple_choice", "refcoco")


class CompareFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@eval_app.command("score")
def score(
    task: Annotated[str, typer.Argument(metavar="TASK", help=f"One of: {', '.join(SCORE_TASKS)}.")],
    predictions: Annotated[
        Path, typer.Option("--predictions", help="Predictions file (the benchmark's results format).")
    ],
    references: Annotated[
        Path, typer.Option("--references", help="References file (the benchmark's annotations format).")
    ],
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing", help="Score references without a prediction as 0 instead of failing."
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Score predictions made elsewhere against a benchmark's references, no model needed: vqav2 (results
    and annotations JSON), coco_captions (results and captions JSON), pope (answers and questions JSONL),
    multiple_choice, refcoco. Every prediction must match a reference id. Metrics are 0-1."""
    from vlmforge.verbs import eval_score as verb

    result = guarded(lambda: verb.run(task, predictions, references, allow_missing))
    emit(fmt, result.to_json(), lambda: score_table(result))


def score_table(result: Any) -> None:
    counts = result.counts
    caption = f"{counts['scored']} of {counts['references']} references scored"
    if counts["missing"]:
        caption += f"; {counts['missing']} without a prediction scored 0"
    table = Table(title=f"eval score: {result.task} ({result.scale})")
    table.add_column("metric")
    table.add_column("value", justify="right", overflow="fold")
    for name, value in result.metrics.items():
        table.add_row(escape(name), f"{value:.4f}" if isinstance(value, float) else escape(str(value)))
    out.print(table)
    out.print(escape(f"{caption} ({result.benchmark})"), highlight=False)


@eval_app.command("compare")
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR...", help="Evaluated run directories, model folders or eval output folders."
        ),
    ],
    fmt: Annotated[
        CompareFormat, typer.Option("--format", help="table (human), json (one object) or csv.")
    ] = CompareFormat.table,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the shared 0-1 metrics as grouped bars (PNG).")
    ] = None,
) -> None:
    """Compare evaluated runs side by side: every metric they share (then, marked *, those only some have)
    and the planned vs measured wall-clock hours, GPU-hours and cost."""
    from vlmforge.verbs import eval_compare as verb

    comparison = guarded(lambda: verb.run(runs, plot))
    if fmt is CompareFormat.csv:
        sys.stdout.write(comparison.to_csv())
        return
    emit(OutputFormat(fmt.value), comparison.to_json(), lambda: compare_table(comparison))


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def compare_table(comparison: Any) -> None:
    from vlmforge.verbs.eval_compare import COST_ROWS

    table = Table(title="eval compare", caption="* not every run has this metric; - none recorded")
    table.add_column("metric")
    for run in comparison.runs:
        table.add_column(escape(run.label), justify="right", overflow="fold")
    table.add_row("data", *(escape(", ".join(run.data)) for run in comparison.runs), end_section=True)
    for name in comparison.metric_names:
        shown = name if comparison.shared(name) else f"{name} *"
        table.add_row(escape(shown), *(_cell(v) for v in comparison.values(name)))
    table.rows[-1].end_section = True
    for name in COST_ROWS:
        table.add_row(escape(name), *(_cell(v) for v in comparison.values(name)))
    out.print(table)
