"""`vlmforge curate annotate export` (a stratified sample of a curation, as Label Studio tasks and a CSV)
and `vlmforge curate annotate import` (labels back, and each filter's agreement with them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from vlmforge_cli.common import FormatOpt, OutputFormat, curate_app, emit, guarded, out

annotate_app = typer.Typer(
    help="Sample a curation for human labelling and measure each filter against the labels.",
    no_args_is_help=True,
)
curate_app.add_typer(annotate_app, name="annotate")


@annotate_app.command("export")
def export(
    output: Annotated[Path, typer.Argument(help="Output folder of a finished `vlmforge curate`.")],
    to: Annotated[Path, typer.Option("--to", help="New folder for the sample.")],
    per_stratum: Annotated[int, typer.Option(min=1, help="Samples per stratum (at most).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the choice within each stratum.")] = 0,
    bin_score: Annotated[
        str | None,
        typer.Option(help="Score binning the kept samples, e.g. clip_score.clip_score (default: the last)."),
    ] = None,
    bins: Annotated[int, typer.Option(min=1, help="Quantile bins of the kept samples' score.")] = 4,
    image_prefix: Annotated[
        str, typer.Option(help="Prefix of image paths in tasks.json (Label Studio local-files serving).")
    ] = "/data/local-files/?d=",
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Write a stratified sample (dropped samples per stage and reason, kept samples per score bin):
    sample.json, images/, tasks.json + label_config.xml for Label Studio, labels.csv for a spreadsheet."""
    from vlmforge.verbs import curate_annotate as verb

    result = guarded(lambda: verb.export(output, to, per_stratum, seed, bin_score, bins, image_prefix))
    emit(fmt, result.to_json(), lambda: _strata_table(result))


@annotate_app.command("import")
def import_labels(
    folder: Annotated[Path, typer.Argument(help="The sample folder `curate annotate export` wrote.")],
    labels: Annotated[Path, typer.Option("--labels", help="Label Studio JSON export, or the filled CSV.")],
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Read keep/drop labels back into labels.json and write agreement.json: per stage, precision, recall
    and F1 of its drop decision against the labels, and of a threshold on each score at every cut-off."""
    from vlmforge.verbs import curate_annotate as verb

    result = guarded(lambda: verb.import_labels(folder, labels))
    emit(fmt, result.to_json(), lambda: _agreement_table(result))


def _strata_table(result: Any) -> None:
    table = Table(title=f"annotation sample: {result.items} items")
    table.add_column("stratum")
    table.add_column("population", justify="right")
    table.add_column("sampled", justify="right")
    for name, counts in result.strata.items():
        table.add_row(escape(name), str(counts["population"]), str(counts["sampled"]))
    out.print(table)
    tasks, sheet = (escape(str(result.folder / name)) for name in ("tasks.json", "labels.csv"))
    out.print(f"Label Studio: {tasks}  CSV: {sheet}")


def _agreement_table(result: Any) -> None:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"agreement with {result.labelled} human labels (drop = positive)")
    for column in ("stage", "labelled", "precision", "recall", "F1", "best threshold (F1)"):
        table.add_column(column)
    for stage, report in result.report["stages"].items():
        best = [
            f"{name} {sweep['side']} {sweep['best_f1']['threshold']:g} ({sweep['best_f1']['f1']:.3f})"
            for name, sweep in report["thresholds"].items()
            if sweep["best_f1"]
        ]
        decision = report["decision"]
        table.add_row(
            escape(stage),
            str(report["labelled"]),
            show(decision["precision"]),
            show(decision["recall"]),
            show(decision["f1"]),
            escape("; ".join(best)),
        )
    out.print(table)
    out.print(f"agreement: {escape(str(result.folder / 'agreement.json'))}")
