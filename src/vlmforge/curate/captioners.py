"""Captioners for re-captioning and caption agreement (seed §3.1.1, §3.1.4): a Python factory's callable,
or a trained vlmforge run (a CoCa pretrain run or a LLaVA finetune run) that captions images the way it
was trained to see them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vlmforge.config.curate_models import PythonCaptioner, RunCaptioner
from vlmforge.errors import UserError

RUN_HINT = "give a run of `vlmforge pretrain` with model.kind: coca, or of `vlmforge finetune` (LLaVA)"


class Captioner(Protocol):
    """PIL RGB images and their current captions -> one new caption per image."""

    def __call__(self, images: list[Any], captions: list[str]) -> list[str]: ...


def build_captioner(cfg: PythonCaptioner | RunCaptioner, field: str) -> Captioner:
    """The captioner of a recipe's ``captioner:`` section at ``field``; bad settings are UserErrors."""
    if isinstance(cfg, RunCaptioner):
        return load_run_captioner(cfg, field)
    return _from_factory(cfg.target, cfg.options, f"{field}.target")


def check_captioner(cfg: PythonCaptioner | RunCaptioner, field: str) -> None:
    """What building the captioner would stop on, found without loading a model or calling a factory:
    the run and its device, or the factory's import."""
    if isinstance(cfg, RunCaptioner):
        check_run(cfg, field)
        _check_device(cfg, field)
    else:
        _factory(cfg.target, f"{field}.target")


def _factory(target: str, field: str) -> Callable[..., Captioner]:
    module_name, _, factory_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(
            f"{field}: cannot import {target!r}: {exc}", hint="'package.module:factory'"
        ) from None


def _from_factory(target: str, options: dict[str, Any], field: str) -> Captioner:
    factory = _factory(target, field)
    try:
        return factory(**options)
    except TypeError as exc:
        raise UserError(f"{field}: {target} does not accept these options: {exc}") from None


# --------------------------------------------------------------------------------------- run captioners
def check_run(cfg: RunCaptioner, field: str) -> str:
    """The run's verb (pretrain or finetune), once it is known to be a run that captions; no model is
    loaded."""
    from vlmforge.config.load import load_recipe, read_yaml
    from vlmforge.config.schema import recipe_verb

    run: Path = cfg.run
    if not (run / "recipe.yaml").is_file():
        what = "does not exist" if not run.exists() else "is not a run directory (no recipe.yaml)"
        raise UserError(f"{field}.run: {run} {what}", hint=RUN_HINT)
    if cfg.checkpoint is not None and not cfg.checkpoint.is_file():
        raise UserError(f"{field}.checkpoint: file not found: {cfg.checkpoint}")
    verb = recipe_verb(read_yaml(run / "recipe.yaml"))
    if verb not in ("pretrain", "finetune"):
        raise UserError(f"{field}.run: {run} holds a {verb} recipe, not a training run's", hint=RUN_HINT)
    recipe = load_recipe(verb, run / "recipe.yaml")
    kind = recipe.model.kind
    if (verb, kind) not in (("pretrain", "coca"), ("finetune", "llava")):
        raise UserError(
            f"{field}.run: {run} is a {kind} run, which cannot caption images (no text decoder)",
            hint=RUN_HINT,
        )
    return verb


def load_run_captioner(cfg: RunCaptioner, field: str) -> Captioner:
    import torch

    from vlmforge.runs.artifacts import load_trained, stage_of

    verb = check_run(cfg, field)
    _check_device(cfg, field)
    device = torch.device(cfg.device)
    model, tokenizer, recipe, weights = load_trained(cfg.run, cfg.checkpoint)
    model = model.to(device).eval()
    if verb == "pretrain":
        from vlmforge.evaluate.captioning import caption_decoding
        from vlmforge.families import family_for

        context = family_for(recipe.model).models.context_length(recipe.model, model)
        data = recipe.data
        settings = caption_decoding(cfg, context, field)
        pixels = RunPixels(data.image_size, data.mean, data.std, device)
        return CocaCaptioner(model, tokenizer, settings, pixels)
    stage = stage_of(cfg.run, recipe, weights)
    search: dict[str, Any] = {}  # transformers' equivalents, only where set (no warnings otherwise)
    if cfg.method == "beam":
        search |= {"num_beams": cfg.beam_size, "length_penalty": cfg.length_penalty}
    if cfg.repetition_penalty != 1.0:
        search["repetition_penalty"] = cfg.repetition_penalty
    if cfg.no_repeat_ngram:
        search["no_repeat_ngram_size"] = cfg.no_repeat_ngram
    return LlavaCaptioner(
        model,
        tokenizer,
        cfg.prompt,
        stage.template,
        cfg.max_length or recipe.model.max_text_tokens,
        search,
        RunPixels(recipe.model.input_side, stage.data.mean, stage.data.std, device),
    )


def _check_device(cfg: RunCaptioner, field: str) -> None:
    if cfg.device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{field}.device: {cfg.device!r} asked for, but CUDA is not available")


@dataclass
class RunPixels:
    """A run's training transform (vlmforge.data.images.square_tensor) of images, stacked on ``device``."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: Any

    def __call__(self, images: list[Any]) -> Any:
        import torch

        from vlmforge.data.images import square_tensor

        m, s = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        return torch.stack([square_tensor(image, self.image_size, m, s) for image in images]).to(self.device)


@dataclass
class CocaCaptioner:
    """CoCa's decoder with the project's batched greedy / beam search (vlmforge.generate)."""

    model: Any
    tokenizer: Any
    settings: Any  # vlmforge.generate.Decoding
    pixels: RunPixels

    def __call__(self, images: list[Any], captions: list[str]) -> list[str]:
        from vlmforge.evaluate.captioning import coca_captions

        return coca_captions(self.model, self.tokenizer, self.pixels(images), self.settings)


@dataclass
class LlavaCaptioner:
    """A LLaVA model's answer to ``prompt`` about each image (transformers' generate, no sampling)."""

    model: Any
    tokenizer: Any
    prompt: str
    template: str
    max_new_tokens: int
    search: dict[str, Any]
    pixels: RunPixels

    def __call__(self, images: list[Any], captions: list[str]) -> list[str]:
        from vlmforge.data.conversations import IMAGE
        from vlmforge.evaluate.vqa import answer

        questions = [f"{IMAGE}\n{self.prompt}"] * len(images)
        return answer(
            self.model,
            self.tokenizer,
            questions,
            list(self.pixels(images)),
            self.max_new_tokens,
            self.template,
            **self.search,
        )
