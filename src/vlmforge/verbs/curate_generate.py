"""`vlmforge curate generate-images`: captions -> K synthetic images each through a local diffusers
pipeline (seed §3.1.1), as a folder dataset grouped by caption id or as WebDataset shards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmforge.curate.synthetic import Settings, generate, load_pipeline, read_prompts
from vlmforge.errors import UserError
from vlmforge.storage import write_json

LAYOUTS = ("folder", "shards")


def generate_images(
    prompts_file: Path,
    pipeline_dir: Path,
    output: Path,
    settings: Settings,
    device: str = "auto",
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Check every input, then render; ``output/generate.json`` records what was asked and made."""
    from vlmforge.interop.inference import resolve_device

    if settings.layout not in LAYOUTS:
        raise UserError(f"--layout {settings.layout!r} is not a layout", hint=f"one of: {', '.join(LAYOUTS)}")
    prompts = read_prompts(prompts_file)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--to {output}: exists and is not empty", hint="choose a new output folder")
    pipeline = load_pipeline(pipeline_dir, str(resolve_device(device)))
    output.mkdir(parents=True, exist_ok=True)
    summary = generate(prompts, pipeline, pipeline_dir, output, settings, progress)
    write_json(output / "generate.json", {**summary, "prompts": str(prompts_file.resolve())})
    return summary
