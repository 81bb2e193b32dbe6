"""`vlmforge align`: preference-tune (DPO / IPO) a finetuned LLaVA, top to bottom.

finetune run (its last stage's weights, tokenizer, model section) -> plan -> run dir -> preference pairs
-> policy + frozen reference -> Trainer.fit (resumable, SIGTERM-safe) -> plain weights -> evaluation on
the held-out pairs (VQA on the chosen answers, reward accuracy and margin).

Run directory: the pretrain layout (``recipe.yaml`` with the run's model section and the resolved
``from_run``, ``plan.json``, ``manifest.json``, ``checkpoints/``, ``metrics.jsonl``, ``actual.json``,
``result.json``, ``eval/``) plus ``tokenizer/`` (the finetune run's), ``model.safetensors`` and
``training.json`` (the training outcome, so that a resumed run whose training finished only evaluates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.config.schema import AlignRecipe, FinetuneRecipe, LlavaModel
from vlmforge.errors import UserError
from vlmforge.finetune import (
    WEIGHTS,
    FitLength,
    final_weights,
    fit_to_weights,
    model_vocab_size,
    stage_completed,
)
from vlmforge.pretrain import PretrainResult, is_launched_worker, start_run
from vlmforge.runs import is_completed, manifest, read_json, write_json

TRAINING = "training.json"  # the training outcome; result.json is written once evaluation is done too
MODEL_FIELDS_IGNORED = {"lora": True, "vision": {"pretrained"}, "llm": {"pretrained"}}


@dataclass(frozen=True)
class FinetunedRun:
    """The finetune run an alignment starts from."""

    run_dir: Path
    recipe: FinetuneRecipe
    weights: Path  # its last finished stage's


def finetuned_run(path: Path) -> FinetunedRun:
    """``from_run``: a finetune run directory, or a folder of runs whose newest completed one is taken."""
    from vlmforge.config.load import load_recipe, read_yaml
    from vlmforge.config.schema import recipe_verb

    if not path.is_dir():
        raise UserError(
            f"from_run: {path} is not a directory", hint="give a `vlmforge finetune` run directory"
        )
    if not (path / "recipe.yaml").is_file():
        runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))
        if not runs:
            raise UserError(
                f"from_run: {path} is neither a run directory nor a folder of completed runs",
                hint="give a `vlmforge finetune` run directory (runs/<name>/<timestamp>)",
            )
        path = runs[-1]
    if recipe_verb(read_yaml(path / "recipe.yaml")) != "finetune":
        raise UserError(f"from_run: {path} is not a finetune run", hint="align starts from a finetune run")
    recipe = load_recipe("finetune", path / "recipe.yaml")
    assert isinstance(recipe, FinetuneRecipe)
    return FinetunedRun(path, recipe, final_weights(path))


def policy_model(recipe: AlignRecipe, run_model: LlavaModel) -> LlavaModel:
    """The run's model section, without pretrained towers (its weights replace them); a model section in
    the align recipe must describe the same architecture."""
    model = run_model.without_pretrained()
    if recipe.model is not None:
        given = recipe.model.model_dump(exclude=MODEL_FIELDS_IGNORED)
        if given != model.model_dump(exclude=MODEL_FIELDS_IGNORED):
            raise UserError(
                f"model: the recipe's model section differs from the one of from_run {recipe.from_run}",
                hint="remove the model section (it is read from the run) or copy the run's",
            )
    return model


def resolved(recipe: AlignRecipe) -> tuple[AlignRecipe, FinetunedRun]:
    """The recipe with from_run resolved to one run directory and that run's model section."""
    source = finetuned_run(recipe.from_run)
    update = {"from_run": source.run_dir, "model": policy_model(recipe, source.recipe.model)}
    return recipe.model_copy(update=update), source


def planned_model(recipe: AlignRecipe) -> LlavaModel:
    """The model `vlmforge plan` counts: the recipe's model section, else the one of from_run."""
    if recipe.model is not None:
        return recipe.model
    if not recipe.from_run.exists():
        raise UserError(
            f"from_run {recipe.from_run} is not on this machine: cannot read its model section",
            hint="add the finetune run's model section to the recipe to plan it before the run exists",
        )
    return resolved(recipe)[0].model  # type: ignore[return-value]


def run(
    recipe: AlignRecipe, resume: str = "never", confirm: Callable[[str], bool] | None = None
) -> PretrainResult | None:
    """Align; returns the result on global rank 0 and ``None`` on the other ranks."""

    from vlmforge.data.conversations import IMAGE, load_tokenizer, save_tokenizer
    from vlmforge.data.preferences import PreferenceSamples, split_preferences
    from vlmforge.models.llava import transformers_module
    from vlmforge.training.align import AlignModule
    from vlmforge.training.module import FitSettings
    from vlmforge.training.trainer import check_logger_installed, check_runnable

    transformers_module()  # the llava extra, before anything is created
    check_logger_installed(recipe.logger)
    recipe, source = resolved(recipe)
    cfg = recipe.model
    assert cfg is not None
    check_runnable(recipe)
    train, val = split_preferences(recipe.data, cfg.vision.image_size)
    if len(train) < recipe.batch_size:
        raise UserError(
            f"data: {len(train)} training pairs cannot fill one batch of batch_size={recipe.batch_size}",
            hint="lower batch_size or add data",
        )
    run_dir, point = start_run(recipe, resume, confirm)

    tokenizer = load_tokenizer(source.run_dir / "tokenizer")
    vocab = model_vocab_size(source.recipe, tokenizer)
    tokens = (int(tokenizer.convert_tokens_to_ids(IMAGE)), int(tokenizer.pad_token_id))
    if not is_launched_worker():
        save_tokenizer(tokenizer, run_dir / "tokenizer")
        devices = {"accelerator": recipe.train.accelerator, "world_size": recipe.world_size}
        write_json(run_dir / "manifest.json", manifest(recipe.seed, train.images.fingerprint, devices))

    if stage_completed(run_dir, TRAINING):  # trained earlier; only the evaluation is left
        outcome = read_json(run_dir / TRAINING)
    else:
        steps = recipe.steps_for(len(train))
        settings = FitSettings(
            recipe.batch_size, recipe.micro_batch_size, recipe.data.num_workers, recipe.optim, steps
        )
        module = AlignModule(recipe, vocab, settings, tokens, source.weights)
        module.train_data = PreferenceSamples(
            train, tokenizer, cfg.image_tokens, tokens[0], cfg.max_text_tokens
        )
        resume_from = point.checkpoint if point else None
        note = f" from {resume_from}" if resume_from else f" from {source.run_dir}"
        outcome = fit_to_weights(
            recipe,
            module,
            run_dir,
            FitLength(recipe.batch_size, recipe.accumulate_grad_batches, steps),
            recipe.name,
            f"align: {recipe.dpo.loss} (beta {recipe.dpo.beta:g}), {recipe.trainable}, {steps} steps{note}",
            resume_from,
            TRAINING,
        )
    if is_launched_worker():
        return None
    metrics: dict[str, Any] = {"train": outcome.get("metrics", {}), "data": train.tally.to_json()}
    status = outcome["status"]
    if status == "completed" and recipe.eval and len(val) > 0:
        metrics["eval"] = evaluate_policy(
            recipe, run_dir / WEIGHTS, source, tokenizer, vocab, val, list(recipe.eval)
        ).metrics
    weights = run_dir / WEIGHTS if status == "completed" else None
    resumed_from = point.checkpoint if point else None
    result = PretrainResult(run_dir, status, outcome.get("steps", 0), weights, resumed_from, metrics)
    write_json(run_dir / "result.json", result.to_json())
    return result


def evaluate_policy(
    recipe: AlignRecipe,
    weights: Path,
    source: FinetunedRun,
    tokenizer: Any,
    vocab: int,
    data: Any,
    tasks: list[Any],
    batch_size: int = 256,
) -> Any:
    """The tasks on ``data`` (preference pairs): the aligned policy's ``weights``, with the starting model
    as the reference; results written to the run's ``eval/``."""
    import torch

    from vlmforge.data.conversations import IMAGE
    from vlmforge.evaluate import EvalResult, PreferenceReference, evaluate_model, write_eval_results
    from vlmforge.models.llava import trained_model

    cfg = recipe.model
    assert cfg is not None
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    policy = trained_model(cfg, vocab, image_id, weights)
    reference = PreferenceReference(trained_model(cfg, vocab, image_id, source.weights), recipe.dpo.beta)
    with torch.no_grad():
        metrics = evaluate_model(
            cfg, policy, tokenizer, cfg.max_text_tokens, data, tasks, batch_size, reference=reference
        )
    run_dir = weights.parent
    result = EvalResult(run_dir, weights, data.name, metrics)
    write_eval_results(run_dir, result.to_json())
    return result


def evaluate_run(run_dir: Path, eval_recipe: Any) -> Any:
    """`vlmforge eval --run` on an align run: its final policy (or ``checkpoint``, a weights file) on its
    held-out pairs or on other preference data, with the tasks of its recipe unless others are given."""
    from vlmforge.config.load import load_recipe
    from vlmforge.config.schema import DigitsPreferences, PreferenceJsonData
    from vlmforge.data.conversations import load_tokenizer
    from vlmforge.data.preferences import open_preferences, split_preferences

    recipe = load_recipe("align", run_dir / "recipe.yaml")
    assert isinstance(recipe, AlignRecipe)
    weights = eval_recipe.checkpoint or run_dir / WEIGHTS
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise UserError(
            f"checkpoint: {weights} is not an align run's weights file",
            hint="give RUN/model.safetensors, or leave it unset for the run's final weights",
        )
    source = finetuned_run(recipe.from_run)
    side = recipe.model.vision.image_size  # type: ignore[union-attr]
    if eval_recipe.data is None:
        data = split_preferences(recipe.data, side)[1]
    elif isinstance(eval_recipe.data, PreferenceJsonData | DigitsPreferences):
        data = open_preferences(eval_recipe.data, side)
    else:
        raise UserError(
            f"data.kind {eval_recipe.data.kind!r}: an align run is evaluated on preference pairs",
            hint="use data.kind: preference-json or digits-preferences",
        )
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    tasks = list(eval_recipe.tasks if eval_recipe.tasks is not None else recipe.eval)
    vocab = model_vocab_size(source.recipe, tokenizer)
    return evaluate_policy(recipe, weights, source, tokenizer, vocab, data, tasks, eval_recipe.batch_size)
