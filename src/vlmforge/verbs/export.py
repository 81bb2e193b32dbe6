"""`vlmforge export`: a finished run as a folder the ecosystem's libraries load (open_clip, transformers,
timm), with a model card.

run directory -> its kind and the exporter of the format (``vlmforge.interop.EXPORTERS``) -> written into
a temporary folder next to the destination -> model card -> renamed into place. A failure at any point
leaves the destination as it was: an export is never half-written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.config.load import read_yaml
from vlmforge.config.schema import recipe_verb
from vlmforge.errors import UserError, collect, raise_all
from vlmforge.interop import CANNOT, FORMATS, exporter, formats_for
from vlmforge.interop.card import model_card
from vlmforge.storage import is_completed, write_text

DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ExportResult:
    output: Path
    format: str
    kind: str
    dtype: str
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "format": self.format,
            "kind": self.kind,
            "dtype": self.dtype,
            "files": self.files,
            "load": FORMATS[self.format].replace("DIR", str(self.output)),
        }


def run(
    run_dir: Path,
    fmt: str,
    output: Path,
    stage: str | None = None,
    dtype: str = "fp32",
    overwrite: bool = False,
) -> ExportResult:
    """Export ``run_dir`` as ``fmt`` into ``output``; every problem with the request reported at once."""
    kind = run_kind(run_dir)
    raise_all(request_problems(run_dir, kind, fmt, output, dtype, overwrite))
    write = exporter(fmt, kind)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        write(run_dir, partial, stage, torch_dtype(dtype))
        write_text(partial / "README.md", model_card(run_dir, fmt, kind, stage, dtype, output))
        _move_into_place(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    return ExportResult(output, fmt, kind, dtype, files)


def run_kind(run_dir: Path) -> str:
    """The model kind of a run directory (finetune and align runs are LLaVA models)."""
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise UserError(
            f"{run_dir}: not a run directory (no recipe.yaml)",
            hint="give a run directory, e.g. runs/clip-tiny/20260101-120000",
        )
    raw = read_yaml(recipe_file)
    if recipe_verb(raw) in ("finetune", "align"):
        return "llava"
    model = raw.get("model") if isinstance(raw, dict) else None
    kind = model.get("kind") if isinstance(model, dict) else None
    if not isinstance(kind, str):
        raise UserError(f"{recipe_file}: no model.kind", hint="is this a vlmforge run directory?")
    return kind


def request_problems(
    run_dir: Path, kind: str, fmt: str, output: Path, dtype: str, overwrite: bool
) -> list[UserError]:
    def known_format() -> None:
        if fmt not in FORMATS:
            raise UserError(f"--format {fmt!r} is not an export format", hint=f"one of {', '.join(FORMATS)}")

    def format_of_kind() -> None:
        offered = formats_for(kind)
        if fmt in FORMATS and fmt not in offered:
            why = CANNOT.get((fmt, kind))
            raise UserError(
                f"--format {fmt}: a {kind} model cannot be exported as {fmt}" + (f" ({why})" if why else ""),
                hint=f"{kind} models export as {', '.join(offered)}" if offered else None,
            )

    def known_dtype() -> None:
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype!r} is not a weights dtype", hint=f"one of {', '.join(DTYPES)}")

    problems = collect(
        [
            known_format,
            format_of_kind,
            known_dtype,
            lambda: _check_finished(run_dir, kind),
            lambda: _check_output(output, run_dir, overwrite),
        ]
    )
    return problems


def _check_finished(run_dir: Path, kind: str) -> None:
    """Pretrain and align runs must have completed; a finetune run is checked per stage by its exporter."""
    if kind == "llava" and (run_dir / "stages").is_dir():
        return
    if not is_completed(run_dir):
        raise UserError(
            f"{run_dir}: the run has not completed (result.json does not say status: completed)",
            hint="resume it to its end with --resume auto, then export",
        )


def _check_output(output: Path, run_dir: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file", hint="give a folder path")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(
            f"--output {output} exists and is not empty",
            hint="give a new folder, or add --overwrite to replace it",
        )
    resolved = output.resolve()
    if resolved == run_dir.resolve() or run_dir.resolve().is_relative_to(resolved):
        raise UserError(f"--output {output} would replace the run directory itself", hint="give a new folder")


def _move_into_place(partial: Path, output: Path) -> None:
    """Rename the finished export onto ``output``; an old export there is moved aside first and removed
    only once the new one is in place."""
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    if output.exists():
        output.rename(old)
    try:
        partial.rename(output)
    except OSError:
        if old.exists():
            old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
