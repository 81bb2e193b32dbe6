"""A trained model ready for inference, from a vlmforge run directory (pretrain, finetune or align), an
open_clip ``local-dir`` export or a transformers folder (LLaVA, CLIP, SigLIP): the model on its device,
its tokenizer, the image transform it trained with, its context length, how it is prompted, and the
prompt templates and class names its run knows.

``vlmforge predict`` and ``vlmforge eval --model`` load through here. A run and its export (open_clip, or
transformers for LLaVA) load to the same model, transform and tokenization, so they predict alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.schema import (
    AlignRecipe,
    DigitsData,
    FinetuneRecipe,
    FolderData,
    PretrainRecipe,
)
from vlmforge.data.base import DEFAULT_PROMPTS
from vlmforge.errors import UserError
from vlmforge.interop.inference_model import HF_CONFIG, OPEN_CLIP_CONFIG, ImageTransform, InferenceModel

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU."""
    if device not in DEVICES:
        raise UserError(f"--device {device!r} is not a device", hint=f"one of: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible here", hint="use --device cpu or auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def is_open_clip_export(path: Path) -> bool:
    return (path / OPEN_CLIP_CONFIG).is_file()


def is_transformers_folder(path: Path) -> bool:
    """A folder transformers' ``from_pretrained`` reads that is not a vlmforge run directory."""
    return (path / HF_CONFIG).is_file() and not (path / "recipe.yaml").is_file()


def is_exported_model(path: Path) -> bool:
    """An open_clip export or a transformers folder: a model without a run around it."""
    return is_open_clip_export(path) or is_transformers_folder(path)


def load_for_inference(path: Path, device: str = "cpu") -> InferenceModel:
    """The model in ``path``: a vlmforge run directory (recipe.yaml), an open_clip export
    (open_clip_config.json) or a transformers folder (config.json), in eval mode on ``device``
    (auto, cpu or cuda)."""
    if not path.is_dir():
        raise UserError(
            f"{path}: not a directory", hint="give a vlmforge run directory or an exported model folder"
        )
    target = resolve_device(device)
    if is_open_clip_export(path):
        from vlmforge.interop.open_clip_local import load_open_clip_export

        loaded = load_open_clip_export(path, target)
    elif (path / "recipe.yaml").is_file():
        loaded = load_run(path, target)
    elif is_transformers_folder(path):
        from vlmforge.interop.hf_local import load_transformers_folder

        loaded = load_transformers_folder(path, target)
    else:
        raise UserError(
            f"{path}: neither a vlmforge run directory (no recipe.yaml) nor an exported model "
            f"(no {OPEN_CLIP_CONFIG}, no {HF_CONFIG})",
            hint="give a run directory (runs/NAME/STAMP), a folder written by vlmforge export "
            "(--format open_clip or hf), or a transformers folder (LLaVA, CLIP, SigLIP)",
        )
    loaded.model.eval()
    return loaded


def model_kind(path: Path) -> str | None:
    """The kind of the model at ``path`` from its config files, without loading weights (None: not
    known before loading; ``load_for_inference`` says why)."""
    from vlmforge.config.load import read_yaml
    from vlmforge.config.schema import recipe_verb
    from vlmforge.storage import read_json

    try:
        if (path / "recipe.yaml").is_file():
            recipe = read_yaml(path / "recipe.yaml")
            if recipe_verb(recipe) in ("finetune", "align"):
                return "llava"
            return str(recipe["model"]["kind"])
        if (path / OPEN_CLIP_CONFIG).is_file():
            config = read_json(path / OPEN_CLIP_CONFIG)["model_cfg"]
            return "coca" if "multimodal_cfg" in config else "clip"  # siglip runs the tasks clip runs
        if (path / HF_CONFIG).is_file():
            return str(read_json(path / HF_CONFIG)["model_type"])
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None
    return None


# ------------------------------------------------------------------------------------------- runs
def load_run(run_dir: Path, device: torch.device) -> InferenceModel:
    from vlmforge.runs.artifacts import run_verb

    verb = run_verb(run_dir)
    if verb == "pretrain":
        return _pretrain_run(run_dir, device)
    if verb == "finetune":
        return _finetune_run(run_dir, device)
    if verb == "align":
        return _align_run(run_dir, device)
    raise UserError(f"{run_dir} is a {verb} recipe's folder, not a trained run", hint="give a run directory")


def _pretrain_run(run_dir: Path, device: torch.device) -> InferenceModel:
    from vlmforge.families import family_for
    from vlmforge.runs.artifacts import load_trained

    model, tokenizer, recipe, weights = load_trained(run_dir)
    assert isinstance(recipe, PretrainRecipe)
    data = recipe.data
    return InferenceModel(
        kind=recipe.model.kind,
        source="pretrain run",
        path=run_dir,
        weights=weights,
        model=model.to(device),
        tokenizer=tokenizer,
        transform=ImageTransform(int(data.image_size), tuple(data.mean), tuple(data.std)),
        context_length=family_for(recipe.model).models.context_length(recipe.model, model),
        device=device,
        templates=run_templates(recipe),
        classnames=run_classnames(recipe),
        recipe=recipe,
    )


def run_templates(recipe: PretrainRecipe) -> tuple[str, ...]:
    """The zero-shot templates the run's evaluation uses: its zeroshot task's, else its data's."""
    for task in recipe.eval:
        if task.kind == "zeroshot" and getattr(task, "templates", None):
            return tuple(task.templates)  # type: ignore[union-attr]
    if isinstance(recipe.data, DigitsData):
        from vlmforge.data.digits import TEMPLATES

        return tuple(recipe.data.templates or TEMPLATES)
    templates: Sequence[str] | None = getattr(recipe.data, "templates", None)
    return tuple(templates) if templates else DEFAULT_PROMPTS


def run_classnames(recipe: PretrainRecipe) -> list[str] | None:
    if isinstance(recipe.data, DigitsData):
        from vlmforge.data.digits import CLASSNAMES

        return list(CLASSNAMES)
    if isinstance(recipe.data, FolderData):
        return recipe.data.classnames
    return None


def _finetune_run(run_dir: Path, device: torch.device) -> InferenceModel:
    from vlmforge.runs.artifacts import load_finetuned, stage_of

    model, tokenizer, recipe, weights = load_finetuned(run_dir)
    assert isinstance(recipe, FinetuneRecipe)
    stage = stage_of(run_dir, recipe, weights)
    return _llava(
        run_dir, "finetune run", model, tokenizer, recipe, weights, stage.data, stage.template, device
    )


def _align_run(run_dir: Path, device: torch.device) -> InferenceModel:
    """An align run's final policy (its reference is not needed to predict)."""
    from vlmforge.config.load import load_recipe
    from vlmforge.data.conversations import load_tokenizer
    from vlmforge.runs.artifacts import llava_model
    from vlmforge.storage import WEIGHTS

    recipe = load_recipe("align", run_dir / "recipe.yaml")
    assert isinstance(recipe, AlignRecipe) and recipe.model is not None
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{run_dir}: the align run has no {WEIGHTS} yet", hint="resume it with --resume auto")
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    model = llava_model(recipe.model, tokenizer, weights)
    return _llava(run_dir, "align run", model, tokenizer, recipe, weights, recipe.data, "chat", device)


def _llava(
    run_dir: Path,
    source: str,
    model: Any,
    tokenizer: Any,
    recipe: FinetuneRecipe | AlignRecipe,
    weights: Path,
    data: Any,
    template: str,
    device: torch.device,
) -> InferenceModel:
    cfg = recipe.model
    assert cfg is not None
    return InferenceModel(
        kind="llava",
        source=source,
        path=run_dir,
        weights=weights,
        model=model.to(device),
        tokenizer=tokenizer,
        transform=ImageTransform(cfg.input_side, tuple(data.mean), tuple(data.std)),
        context_length=cfg.max_text_tokens,
        device=device,
        prompt_template=template,
        recipe=recipe,
    )
