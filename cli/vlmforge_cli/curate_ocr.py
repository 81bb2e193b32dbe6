"""`vlmforge curate ocr-conversations`: LLaVAR-style conversations quoting the text OCR reads in images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from vlmforge_cli.common import FormatOpt, OutputFormat, curate_app, emit, guarded, out


@curate_app.command("ocr-conversations")
def ocr_conversations(
    folder: Annotated[Path, typer.Argument(help="Folder of text-rich images (recursive).")],
    to: Annotated[Path, typer.Option("--to", help="New LLaVA conversation JSON file.")],
    lm: Annotated[
        Path | None,
        typer.Option(
            "--lm", help="A local causal LM folder that writes the conversations (default: templates)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the template choices.")] = 0,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Read each image's text with EasyOCR (the `ocr` extra) and write a LLaVA conversation quoting it,
    as LLaVAR builds its text-rich instruction data; each entry keeps the words and pixel boxes as 'ocr'.
    Train on it with `data: {kind: llava-json, path: TO}`."""
    from vlmforge.curate.ocr_conversations import write_ocr_conversations

    summary = guarded(lambda: write_ocr_conversations(folder, to, lm, seed))
    line = (
        f"{summary['written']} conversations from {summary['images']} images "
        f"(no text {summary['no_text']}, unreadable {summary['unreadable']}, no reply {summary['no_reply']})"
    )
    emit(fmt, summary, lambda: out.print(f"{line}: {escape(str(to))}"))
