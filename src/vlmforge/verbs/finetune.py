"""`vlmforge finetune`: train a vision-language model in stages, top to bottom.

plan -> run dir -> data + tokenizer -> for each stage: model from the previous stage's weights, freeze
what the stage does not train, Trainer.fit (resumable), plain weights for the next stage -> evaluation
on the last stage's held-out split. A finished stage is skipped when the run is resumed.

Run directory: the pretrain layout, plus ``stages/<name>/`` holding each stage's ``checkpoints/``,
``metrics.jsonl``, ``plots/``, ``logs/`` (the recipe's loggers), ``actual.json``, ``result.json`` and
``model.safetensors`` (LoRA merged). The run root and each stage folder hold the transformers
``config.json`` of the model (see ``write_run_config``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmforge.config.peft import ContrastiveFinetuneRecipe
from vlmforge.config.schema import FinetuneRecipe, FinetuneStage
from vlmforge.errors import UserError, raise_all
from vlmforge.runs.artifacts import llava_model, stage_completed, stage_dir
from vlmforge.runs.directory import ResumePoint, manifest, resume_point_in
from vlmforge.runs.lifecycle import RunResult, is_launched_worker, records_disk_full, start_run
from vlmforge.storage import WEIGHTS, is_completed, read_json, write_json


@records_disk_full
def run(
    recipe: FinetuneRecipe | ContrastiveFinetuneRecipe,
    resume: str = "never",
    confirm: Callable[[str], bool] | None = None,
) -> RunResult | None:
    """Train every stage; returns the result on global rank 0 and ``None`` on the other ranks. A recipe
    with a ``method`` tunes a contrastive model instead (``verbs.finetune_contrastive``)."""
    if isinstance(recipe, ContrastiveFinetuneRecipe):  # one device, minutes: nothing to confirm
        return _run_contrastive(recipe, resume)
    import torch

    from vlmforge.data.conversations import (
        IMAGE,
        build_tokenizer,
        load_tokenizer,
        save_tokenizer,
        template_texts,
    )
    from vlmforge.data.in_context import split_stage_data
    from vlmforge.data.locations import add_location_tokens, location_grids, without_location_markup
    from vlmforge.evaluate.results import EvalResult, without_item_lists
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.models.llava import vocab_size_for, write_run_config
    from vlmforge.runs.preflight import preflight

    raise_all(preflight(recipe))
    side = recipe.model.input_side
    splits = [split_stage_data(stage.data, side) for stage in recipe.stages]
    for i, (stage, (train, _)) in enumerate(zip(recipe.stages, splits, strict=True)):
        if len(train) < stage.batch_size:
            raise UserError(
                f"stages[{i}] ({stage.name}): {len(train)} training conversations cannot fill one batch of "
                f"batch_size={stage.batch_size}",
                hint="lower the stage's batch_size or add data",
            )
    run_dir, point = start_run(recipe, resume, confirm)

    saved_tokenizer = run_dir / "tokenizer"
    if saved_tokenizer.is_dir():  # a resumed run keeps its vocabulary
        tokenizer = load_tokenizer(saved_tokenizer)
    else:
        texts = [
            *template_texts(),
            *(without_location_markup(t) for train, _ in splits for t in train.texts()),
        ]
        spec = recipe.model.tokenizer
        tokenizer = build_tokenizer(
            spec.kind, texts, getattr(spec, "vocab_size", 0), getattr(spec, "name", "")
        )
        for bins in location_grids(stage.data for stage in recipe.stages):
            add_location_tokens(tokenizer, bins)
        if not is_launched_worker():
            save_tokenizer(tokenizer, saved_tokenizer)
    vocab = vocab_size_for(recipe.model, tokenizer)
    tokens = (int(tokenizer.convert_tokens_to_ids(IMAGE)), int(tokenizer.pad_token_id))
    if not is_launched_worker():
        fingerprints = ",".join(train.images.fingerprint for train, _ in splits)
        devices = {"accelerator": recipe.train.accelerator, "world_size": recipe.world_size}
        write_json(run_dir / "manifest.json", manifest(recipe.seed, fingerprints, devices))
        # transformers' from_pretrained on any of these folders loads the stage's weights or fails loudly
        for folder in (run_dir, *(stage_dir(run_dir, stage) for stage in recipe.stages)):
            write_run_config(folder, recipe.model, vocab, tokens[0])

    started = time.perf_counter()
    stages: dict[str, Any] = {}
    init: Path | None = None
    status, steps = "completed", 0
    for stage, (train, _) in zip(recipe.stages, splits, strict=True):
        directory = stage_dir(run_dir, stage)
        if stage_completed(directory):
            print(f"stage {stage.name}: finished earlier, skipped", file=sys.stderr, flush=True)
            stages[stage.name] = read_json(directory / "result.json")
        else:
            resume_from = _stage_resume(point, directory)
            stages[stage.name] = _run_stage(
                recipe, stage, train, tokenizer, vocab, tokens, directory, init, resume_from
            )
            if stages[stage.name]["status"] != "completed":
                status = stages[stage.name]["status"]
                break
        steps += stages[stage.name].get("steps", 0)
        init = directory / WEIGHTS
    if is_launched_worker():
        return None

    metrics: dict[str, Any] = {"stages": {name: out.get("metrics", {}) for name, out in stages.items()}}
    actual = {name: out.get("actual", {}) for name, out in stages.items()}
    write_json(
        run_dir / "actual.json", {"wall_seconds": round(time.perf_counter() - started, 3), "stages": actual}
    )
    last_val = splits[-1][1]
    if status == "completed" and recipe.eval and len(last_val) > 0:
        assert init is not None
        model = llava_model(recipe.model, tokenizer, init)  # as `vlmforge eval` loads it
        with torch.no_grad():
            evaluated = evaluate_model(
                recipe.model,
                model,
                tokenizer,
                recipe.model.max_text_tokens,
                last_val,
                list(recipe.eval),
                train_data=splits[-1][0],
            )
        EvalResult(run_dir, init, last_val.name, evaluated).write()
        metrics["eval"] = without_item_lists(evaluated)
    final = init if status == "completed" else _checkpoint_of(stages[stage.name])
    if "stopped" in stages[stage.name]:
        metrics["stopped"] = {"stage": stage.name, **stages[stage.name]["stopped"]}
    result = RunResult(run_dir, status, steps, final, point.checkpoint if point else None, metrics)
    result.write()
    return result


def _checkpoint_of(outcome: dict[str, Any]) -> Path | None:
    """The checkpoint a stopped stage saved (at the signal, or its last finite step)."""
    return Path(outcome["checkpoint"]) if outcome.get("checkpoint") else None


def _stage_resume(point: ResumePoint | None, directory: Path) -> Path | None:
    """The checkpoint a stage resumes from: the one asked for if it is this stage's, else its newest."""
    if point is not None and point.checkpoint.parent.parent == directory:
        return point.checkpoint
    found = resume_point_in(directory)
    return found.checkpoint if found else None


def _run_stage(
    recipe: FinetuneRecipe,
    stage: FinetuneStage,
    train: Any,
    tokenizer: Any,
    vocab: int,
    tokens: tuple[int, int],
    directory: Path,
    init: Path | None,
    resume_from: Path | None,
) -> dict[str, Any]:
    """Train one stage; its outcome (rank 0 also writes the stage's weights, actual.json, result.json)."""
    from vlmforge.data.in_context import stage_samples
    from vlmforge.families import family_for
    from vlmforge.models.peft.classifier import share_line, trainable_share
    from vlmforge.training.fit import fit_to_weights
    from vlmforge.training.module import FitSettings

    cfg = recipe.model
    batch = recipe.batch_plan(stage, len(train))
    settings = FitSettings(batch, recipe.stage_optim(stage), stage.data.num_workers)
    module = family_for(cfg).module_class()(recipe, vocab, stage, settings, tokens, init_weights=init)
    module.train_data = stage_samples(
        train, tokenizer, stage.template, cfg.image_tokens, tokens[0], cfg.max_text_tokens
    )
    note = f" from {resume_from}" if resume_from else (f" from {init.parent.name}" if init else "")
    share = share_line(trainable_share(module.model))
    return fit_to_weights(
        recipe,
        module,
        directory,
        batch,
        f"{recipe.name}-{stage.name}",
        f"stage {stage.name}: {stage.trainable}, {batch.max_steps} steps{note}; {share}",
        resume_from,
    )


def _run_contrastive(recipe: ContrastiveFinetuneRecipe, resume: str) -> RunResult:
    """Tune a contrastive model for classification (``training.classifier_run``): start model -> labelled
    images (held-out test split, few-shot training images) -> tuned vs zero-shot -> run dir (the files of
    ``training.classifier_run``, ``recipe.yaml``, ``manifest.json``, ``result.json``)."""
    import torch

    from vlmforge.data.classification import ImageFormat, classification_splits
    from vlmforge.interop.inference import load_for_inference, resolve_device
    from vlmforge.runs.directory import manifest, prepare_run
    from vlmforge.runs.preflight import preflight
    from vlmforge.training.classifier_run import StartModel, tune

    raise_all(preflight(recipe))
    if resume != "never":
        raise UserError("a contrastive finetune run is not resumed", hint="run it again without --resume")
    device = resolve_device({"gpu": "cuda"}.get(recipe.train.accelerator, recipe.train.accelerator))
    start = start_folder(recipe.init_from)
    loaded = load_for_inference(start, str(device))
    if not hasattr(loaded.model, "encode_image") or not hasattr(loaded.model, "encode_text"):
        raise UserError(
            f"init_from: {start} holds a {loaded.kind} model, not a contrastive one",
            hint="start from a clip or siglip run, or an open_clip / transformers CLIP export",
        )
    transform = loaded.transform
    image = ImageFormat(transform.size, tuple(transform.mean), tuple(transform.std))
    splits = classification_splits(recipe.data, image, recipe.seed)
    templates = recipe.data.templates or list(loaded.templates)
    run_dir, _ = prepare_run(recipe, resume)
    torch.manual_seed(recipe.seed)
    write_json(run_dir / "manifest.json", manifest(recipe.seed, start.name, {"accelerator": str(device)}))
    model = StartModel(loaded.model, loaded.tokenizer, loaded.context_length, templates)
    metrics = {"start": str(start), **tune(recipe, model, splits, run_dir, device)}
    steps = metrics.get("train", {}).get("step", 0)
    result = RunResult(run_dir, "completed", steps, run_dir / WEIGHTS, None, metrics)
    result.write()
    return result


def start_folder(path: Path) -> Path:
    """``init_from``: a run directory or an exported model folder, or a folder of runs whose newest completed
    one is taken."""
    if not path.is_dir():
        raise UserError(
            f"init_from: {path} is not a directory", hint="give a pretrain run or an exported model"
        )
    from vlmforge.interop.inference import is_exported_model

    if (path / "recipe.yaml").is_file() or is_exported_model(path):
        return path
    runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))
    if not runs:
        raise UserError(
            f"init_from: {path} is neither a run directory, an exported model nor a folder of completed runs",
            hint="give runs/<name>/<timestamp>, runs/<name>, or a folder written by vlmforge export",
        )
    return runs[-1]
