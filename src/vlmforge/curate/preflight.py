"""What a curation needs before it starts, checked without loading a model or writing anything: every
file, folder, run, vocabulary and captioner the recipe names, and the optional packages it uses. Each
check raises a ``UserError`` naming its field; ``vlmforge.verbs.curate.preflight`` runs them all and
reports every problem at once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmforge.config.curate import CurateRecipe, RayEngine, step_name
from vlmforge.config.curate_models import OpenClipScorer, RunScorer
from vlmforge.errors import UserError, missing_extra

RUN_HINT = "give a run directory of `vlmforge pretrain` (runs/NAME/STAMP)"


def checks(recipe: CurateRecipe) -> list[Callable[[], object]]:
    """One check per thing the recipe names outside itself (its input is listed by the caller)."""
    found: list[Callable[[], object]] = []
    if recipe.model is not None:
        found.append(lambda: check_scorer(recipe.model))
    for step in recipe.steps:
        found += step_checks(step)
    if isinstance(recipe.engine, RayEngine):
        found.append(check_ray)
    if recipe.ffcv is not None:
        found.append(check_ffcv)
    return found


def step_checks(step: Any) -> list[Callable[[], object]]:
    """The checks of one step's files: vocabulary, target images, text detector, captioner."""
    from vlmforge.curate.captioners import check_captioner
    from vlmforge.curate.heuristics import read_vocabulary
    from vlmforge.curate.sampling import target_image_files
    from vlmforge.curate.scoring import check_detector

    field = f"steps.{step_name(step)}"
    found: list[Callable[[], object]] = []
    if getattr(step, "vocabulary_file", None) is not None:
        found.append(lambda: read_vocabulary(None, step.vocabulary_file, f"{field}.vocabulary_file"))
    if step.kind == "datacomp_image":
        found.append(lambda: target_image_files(step.target_images, f"{field}.target_images"))
    if step.kind == "text_spotting" or (step.kind == "clip_score" and step.mask_text):
        found.append(lambda: check_detector(step.detector))
    if hasattr(step, "captioner"):
        found.append(lambda: check_captioner(step.captioner, f"{field}.captioner"))
    if step.kind == "aesthetic_score":
        from vlmforge.curate.quality import load_aesthetic_head

        found.append(lambda: load_aesthetic_head(step.head))
    if step.kind == "text_quality":
        from vlmforge.curate.quality import check_language_model

        found.append(lambda: check_language_model(step.model))
    return found


def check_scorer(cfg: RunScorer | OpenClipScorer) -> None:
    """The scoring model's files: a pretrain run with a checkpoint, or a local open_clip state dict."""
    if isinstance(cfg, OpenClipScorer):
        from vlmforge.weights import resolve

        if cfg.config is not None and not cfg.config.is_file():
            raise UserError(f"model.config: file not found: {cfg.config}", hint="give a local open_clip JSON")
        resolve(cfg.checkpoint, cfg.arch, "model.checkpoint")
        return
    from vlmforge.runs.artifacts import final_checkpoint, run_verb

    if not (cfg.path / "recipe.yaml").is_file():
        what = "does not exist" if not cfg.path.exists() else "is not a run directory (no recipe.yaml)"
        raise UserError(f"model.path: {cfg.path} {what}", hint=RUN_HINT)
    verb = run_verb(cfg.path)
    if verb != "pretrain":
        raise UserError(
            f"model.path: {cfg.path} is a {verb} run; scoring needs image and text towers", hint=RUN_HINT
        )
    if cfg.checkpoint is not None:
        if not cfg.checkpoint.is_file():
            raise UserError(f"model.checkpoint: file not found: {cfg.checkpoint}")
        return
    try:
        final_checkpoint(cfg.path)
    except UserError as exc:
        raise UserError(f"model.path: {exc.message}", exc.hint) from None


def check_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise missing_extra("ray", "ray")


def check_ffcv() -> None:
    from vlmforge.data.ffcv import require_ffcv

    require_ffcv("writing curated.beton (--write ffcv, or the recipe's ffcv: section)")


def output_problem(output: Path) -> None:
    """The output folder cannot be made: a file stands in its place or above it, or no write access."""
    if output.exists() and not output.is_dir():
        raise UserError(f"output: {output} is a file", hint="choose a folder for the curation's output")
    existing = next(p for p in [output, *output.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"output: {existing} is a file, so {output} cannot be created")
    if existing != output and not _writable(existing):
        raise UserError(f"output: cannot create {output}: {existing} is not writable")


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)
