"""Synthetic images for captions (seed §3.1.1; StableRep, Tian et al. 2023; SynCLR): each caption rendered K
times by a local text-to-image pipeline (diffusers), written as a folder dataset whose rows share the
caption's ``caption_id`` — what multi-positive training (``model.multi_positive``,
``data.images_per_caption``) reads — or as WebDataset shards, every sample carrying its provenance
(pipeline, prompt, seed, steps, guidance, size), so that a generated image can always be told apart from
a real one and regenerated.

Generation multiplies samples where the ``curate`` steps only keep or drop them, so it is its own command
(``vlmforge curate generate-images``) rather than a step of a curation recipe.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError, missing_extra

IMAGES = "images"
CAPTIONS = "captions.jsonl"
SHARD_SAMPLES = 1000


@dataclass(frozen=True)
class Prompt:
    caption: str
    caption_id: str


@dataclass(frozen=True)
class Settings:
    per_caption: int = 4
    steps: int = 25
    guidance_scale: float = 7.5
    size: int = 512
    seed: int = 0
    batch_size: int = 4
    layout: str = "folder"  # or "shards"


def read_prompts(path: Path) -> list[Prompt]:
    """Captions from a .txt file (one per line) or a .jsonl file (``caption``, optional ``caption_id``; a
    folder dataset's captions file works). Ids default to the line number; captions must be unique per id."""
    if not path.is_file():
        raise UserError(
            f"{path}: no such captions file", hint="give a .txt (one caption per line) or .jsonl file"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            prompts.append(_json_prompt(path, number, line))
        else:
            prompts.append(Prompt(line.strip(), str(number)))
    if not prompts:
        raise UserError(f"{path}: no captions", hint="one caption per line (.txt) or per JSON line (.jsonl)")
    seen: dict[str, str] = {}
    for prompt in prompts:
        if seen.setdefault(prompt.caption_id, prompt.caption) != prompt.caption:
            raise UserError(
                f"{path}: caption_id {prompt.caption_id!r} names two different captions",
                hint="give each caption its own caption_id",
            )
    return list(dict.fromkeys(prompts))  # a caption listed twice (a folder file: one row per image) once


def _json_prompt(path: Path, number: int, line: str) -> Prompt:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not JSON ({exc.msg})", hint="one JSON object per line") from None
    if not isinstance(row, dict) or not isinstance(row.get("caption"), str) or not row["caption"].strip():
        raise UserError(f"{path}:{number}: no 'caption' string", hint='write {"caption": "...", ...}')
    return Prompt(row["caption"].strip(), str(row.get("caption_id", number)))


def load_pipeline(path: Path, device: str) -> Any:
    """A local diffusers text-to-image pipeline folder (``save_pretrained``), never downloaded."""
    try:
        import diffusers
    except ImportError:
        raise missing_extra("diffusers", "synthetic") from None
    if not (path / "model_index.json").is_file():
        raise UserError(
            f"--pipeline {path}: not a diffusers pipeline folder (no model_index.json)",
            hint="give a folder written by DiffusionPipeline.save_pretrained (download it once with the "
            "diffusers CLI or huggingface-cli)",
        )
    diffusers.utils.logging.disable_progress_bar()
    pipeline = diffusers.DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def provenance(pipeline: Any, path: Path, prompt: Prompt, seed: int, settings: Settings) -> dict[str, Any]:
    import diffusers

    return {
        "generator": f"diffusers {diffusers.__version__}",
        "pipeline": str(path.resolve()),
        "pipeline_class": type(pipeline).__name__,
        "prompt": prompt.caption,
        "seed": seed,
        "steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "height": settings.size,
        "width": settings.size,
    }


def jobs(prompts: list[Prompt], settings: Settings) -> Iterator[tuple[int, Prompt, int]]:
    """(image index, prompt, seed) for every image: image i of the whole run gets seed ``seed + i``."""
    index = 0
    for prompt in prompts:
        for _ in range(settings.per_caption):
            yield index, prompt, settings.seed + index
            index += 1


def render(pipeline: Any, batch: list[tuple[int, Prompt, int]], settings: Settings) -> list[bytes]:
    """PNG bytes of one batch, each image from its own seeded generator (reproducible at any batch size)."""
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(seed) for _, _, seed in batch]
    out = pipeline(
        [prompt.caption for _, prompt, _ in batch],
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        height=settings.size,
        width=settings.size,
        generator=generators,
        output_type="pil",
    )
    encoded = []
    for image in out.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def generate(
    prompts: list[Prompt],
    pipeline: Any,
    pipeline_path: Path,
    output: Path,
    settings: Settings,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Render every caption ``per_caption`` times into ``output`` (a new folder); returns the summary."""
    from vlmforge.curate.io import OutputSample, write_shard

    work = list(jobs(prompts, settings))
    rows: list[dict[str, Any]] = []
    samples: list[OutputSample] = []
    shards: list[str] = []
    if settings.layout == "folder":
        (output / IMAGES).mkdir(parents=True)
    for start in range(0, len(work), settings.batch_size):
        batch = work[start : start + settings.batch_size]
        for (index, prompt, seed), png in zip(batch, render(pipeline, batch, settings), strict=True):
            meta = {
                "caption_id": prompt.caption_id,
                "synthetic": provenance(pipeline, pipeline_path, prompt, seed, settings),
            }
            key = f"{index:08d}"
            if settings.layout == "folder":
                (output / IMAGES / f"{key}.png").write_bytes(png)
                rows.append({"image": f"{IMAGES}/{key}.png", "caption": prompt.caption, **meta})
            else:
                samples.append(OutputSample(key, "png", png, prompt.caption, meta))
                if len(samples) == SHARD_SAMPLES:
                    shards.append(_write(output, len(shards), samples, write_shard))
                    samples = []
        progress(min(start + settings.batch_size, len(work)), len(work))
    if samples:
        shards.append(_write(output, len(shards), samples, write_shard))
    if rows:
        text = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)
        (output / CAPTIONS).write_text(text, encoding="utf-8")
    return {
        "output": str(output),
        "layout": settings.layout,
        "captions": len(prompts),
        "images": len(work),
        "shards": shards,
        "settings": settings.__dict__,
    }


def _write(output: Path, number: int, samples: list[Any], write_shard: Callable[..., str]) -> str:
    path = output / f"{number:05d}.tar"
    write_shard(path, samples)
    return path.name
