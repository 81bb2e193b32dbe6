"""`vlmforge curate generate-images`: synthetic images for captions through a local diffusers pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from vlmforge_cli.common import FormatOpt, OutputFormat, curate_app, emit, err, guarded, out


@curate_app.command("generate-images")
def generate_images(
    captions: Annotated[
        Path, typer.Argument(help="Captions: .txt (one per line) or .jsonl (caption[, caption_id]).")
    ],
    pipeline: Annotated[Path, typer.Option("--pipeline", help="A local diffusers pipeline folder.")],
    to: Annotated[Path, typer.Option("--to", help="New output folder.")],
    per_caption: Annotated[int, typer.Option(min=1, help="Images per caption (StableRep: 10).")] = 4,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps.")] = 25,
    guidance: Annotated[float, typer.Option(min=0, help="Classifier-free guidance scale.")] = 7.5,
    size: Annotated[int, typer.Option(min=8, help="Image side in pixels.")] = 512,
    seed: Annotated[int, typer.Option(help="Image i of the run uses seed + i.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per pipeline call.")] = 4,
    layout: Annotated[
        str, typer.Option(help="folder (images/ + captions.jsonl) or shards (WebDataset).")
    ] = "folder",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Render each caption PER_CAPTION times with a local text-to-image pipeline (seed §3.1.1, StableRep /
    SynCLR): a folder dataset whose images of one caption share its caption_id (what multi-positive
    training reads) or WebDataset shards; every sample's JSON records its provenance (pipeline, prompt,
    seed, steps, guidance, size). Needs the `synthetic` extra (diffusers)."""
    from vlmforge.curate.synthetic import Settings
    from vlmforge.verbs.curate_generate import generate_images as verb

    settings = Settings(per_caption, steps, guidance, size, seed, batch_size, layout)

    def progress(done: int, total: int) -> None:
        err.print(f"generated {done}/{total} images")

    result = guarded(lambda: verb(captions, pipeline, to, settings, device, progress))
    emit(
        fmt,
        result,
        lambda: out.print(
            f"{result['images']} images for {result['captions']} captions ({result['layout']}): "
            f"{escape(str(to))}"
        ),
    )
