"""`vlmforge curate documents` (OBELICS-style curation of interleaved documents), `vlmforge curate
assign-images` (MMC4-style images for text-only documents) and `vlmforge curate demo-documents`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from vlmforge_cli.common import FormatOpt, OutputFormat, curate_app, emit, guarded, out

ShardsArg = Annotated[
    list[str], typer.Argument(help="Interleaved document shards (paths, globs, brace ranges).")
]
ToOpt = Annotated[Path, typer.Option("--to", help="New output folder.")]


@curate_app.command("documents")
def documents(
    shards: ShardsArg,
    to: ToOpt,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="key.path=value, e.g. images.min_side=64 or paragraphs.min_words=3."),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Curate interleaved image-text documents as OBELICS does: image filters (size, aspect ratio, logos,
    repeats across documents), paragraph and document text filters, exact and MinHash near dedup.
    Writes shards/, report.json, dropped.jsonl (documents) and removed.jsonl (images, paragraphs)."""
    from vlmforge.verbs import curate_documents as verb

    report = guarded(lambda: verb.curate(shards, to, list(settings or [])))
    emit(fmt, report, lambda: _report_table(report))


@curate_app.command("assign-images")
def assign_images(
    shards: ShardsArg,
    images: Annotated[Path, typer.Option("--images", help="Folder of candidate images (recursive).")],
    to: ToOpt,
    run: Annotated[Path | None, typer.Option("--run", help="A vlmforge CLIP run to embed with.")] = None,
    arch: Annotated[str | None, typer.Option(help="Or an open_clip architecture...")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="...with its weights (file, folder or tag).")] = None,
    model_config: Annotated[
        Path | None, typer.Option(help="JSON of a custom open_clip architecture named by --arch.")
    ] = None,
    min_similarity: Annotated[float, typer.Option(help="Leave out sentence-image pairs below this.")] = 0.15,
    candidates: Annotated[int, typer.Option(min=1, help="Pool images considered per document.")] = 8,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Give text-only documents images from a pool, as Multimodal C4 does: per document, the maximum-weight
    matching of sentences and candidate images by CLIP similarity; each image follows its sentence and
    keeps its similarity in the document JSON."""
    from vlmforge.config.curate_models import OpenClipScorer, RunScorer
    from vlmforge.errors import UserError
    from vlmforge.verbs import curate_documents as verb

    if (run is None) == (arch is None or checkpoint is None):
        from vlmforge_cli.common import fail

        fail(
            UserError(
                "give --run DIR, or --arch and --checkpoint",
                hint="the model that embeds sentences and images",
            )
        )
    model = (
        RunScorer(path=run)
        if run is not None
        else OpenClipScorer(arch=str(arch), checkpoint=str(checkpoint), config=model_config)
    )
    summary = guarded(lambda: verb.assign(shards, images, to, model, min_similarity, candidates))
    line = f"{summary['documents']} documents, {summary['images']} images assigned (pool: {summary['pool']})"
    emit(fmt, summary, lambda: out.print(f"{line}: {escape(str(to))}"))


@curate_app.command("demo-documents")
def demo_documents(
    to: ToOpt,
    documents: Annotated[int, typer.Option(min=20, help="Clean documents (planted ones come on top).")] = 30,
    shards: Annotated[int, typer.Option(min=1)] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Write a small offline interleaved corpus (digit and shape pages, with planted problems)."""
    from vlmforge.verbs import curate_documents as verb

    result = guarded(lambda: verb.demo(to, documents, shards, seed))
    emit(
        fmt,
        result,
        lambda: out.print(
            f"{result['documents']} documents in {len(result['shards'])} shards: {escape(str(to))}"
        ),
    )


def _report_table(report: dict[str, Any]) -> None:
    table = Table(title=f"curate documents: {report['kept']} of {report['total']} kept")
    for column in ("stage", "in", "out", "dropped (reason: count)"):
        table.add_column(column)
    for stage in report["stages"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in stage["dropped"].items())
        table.add_row(escape(stage["name"]), str(stage["in"]), str(stage["out"]), escape(reasons))
    out.print(table)
    for kind in ("images", "paragraphs"):
        nodes = report[kind]
        removed = ", ".join(f"{r}: {n}" for r, n in nodes["removed"].items()) or "none"
        counts = (
            f"{nodes['in']} in, {nodes['kept']} kept, {nodes['with_dropped_document']} in dropped documents"
        )
        out.print(f"{kind}: {counts}; removed {escape(removed)}")
