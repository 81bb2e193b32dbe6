"""CLI commands that move models in and out of vlmforge: ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlmforge_cli.common import OutputFormat, app, emit, guarded, out


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    to: Annotated[
        str,
        typer.Option("--format", help="open_clip, hf (transformers) or timm (the image encoder)."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to write (must not exist or be empty).")
    ],
    stage: Annotated[
        str | None, typer.Option(help="Finetune stage to export (default: the last completed one).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Weights dtype: fp32, bf16 or fp16.")] = "fp32",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
) -> None:
    """Write a finished run as a folder that open_clip, transformers or timm load, with a model card.

    Formats per model: CLIP/SigLIP/CoCa -> open_clip (and hf for CLIP towers transformers can express);
    LLaVA finetune and align runs -> hf; masked and FLAVA image encoders -> timm. (--format names the
    export format here; --json replaces the other verbs' --format json.)"""
    from vlmforge.verbs import export as verb

    result = guarded(lambda: verb.run(run_dir, to, output, stage, dtype, overwrite))

    def show() -> None:
        out.print(
            f"[bold]exported[/] {result.kind} model as {result.format} ({result.dtype}) to {result.output}"
        )
        for name in result.files:
            out.print(f"  {name}")
        out.print(f"load with: {result.to_json()['load']}")

    emit(OutputFormat.json if as_json else OutputFormat.table, result.to_json(), show)
