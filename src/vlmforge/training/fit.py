"""Assembling and running one ``Trainer.fit``: a pretrain run's module and callbacks (``build_training``,
also what ``plan --calibrate`` times), a LLaVA fit that ends in plain weights (``fit_to_weights``: a
finetune stage or an alignment), and what a finished fit measured (``measure_fit``: ``actual.json``)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.config.schema import BatchPlan, PretrainRecipe, TrainingRecipe
from vlmforge.errors import UserError
from vlmforge.storage import WEIGHTS, write_json


@dataclass
class Training:
    """What `vlmforge pretrain` fits: the family's module on the recipe's training data, and vlmforge's
    callbacks."""

    module: Any
    tokenizer: Any
    context_length: int
    accounting: Any  # DataAccounting
    checkpoints: Any  # AtomicCheckpoint
    metrics_log: Any  # MetricsLog

    @property
    def callbacks(self) -> list[Any]:
        # accounting first: it may stop the run before that step's checkpoint, and MetricsLog reads its counts
        return [self.accounting, self.checkpoints, self.metrics_log]


def build_training(recipe: PretrainRecipe, train_set: Any, run_dir: Path, loggers: list[Any]) -> Training:
    """The module (tokenizer built on the training captions and the zero-shot prompts) and callbacks of a
    pretrain run writing into ``run_dir``."""
    from vlmforge.data.grouping import caption_ids
    from vlmforge.data.loader import CaptionedImages
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.families import family_for
    from vlmforge.training.callbacks import AtomicCheckpoint, DataAccounting
    from vlmforge.training.metrics_log import MetricsLog

    family = family_for(recipe.model)
    prompts = [t.format(c) for t in train_set.prompts for c in (train_set.classnames or [])]
    tokenizer = build_tokenizer(recipe.model.tokenizer, [*train_set.all_captions(), *prompts])
    module = family.module_class()(recipe, tokenizer.vocab_size)
    model_side = family.models.image_size(recipe.model, module.model)
    if model_side != recipe.data.image_size:
        raise UserError(
            f"data.image_size is {recipe.data.image_size} but the model expects {model_side}",
            hint=f"set data.image_size={model_side}",
        )
    ctx = family.models.context_length(recipe.model, module.model)
    grouped = getattr(recipe.model, "multi_positive", False)
    ids = caption_ids(train_set) if grouped else None
    module.train_data = CaptionedImages(train_set, tokenizer, ctx, recipe.seed, ids)
    checkpoint = recipe.train.checkpoint
    accounting = DataAccounting(train_set, recipe.data.max_bad_fraction, run_dir / "metrics.jsonl")
    metrics_log = MetricsLog(
        run_dir / "metrics.jsonl",
        recipe.train.log_every_steps,
        recipe.data.batch_size,
        loggers,
        extras=accounting.metrics,
    )
    checkpoints = AtomicCheckpoint(run_dir / "checkpoints", checkpoint.every_steps, checkpoint.keep_last)
    return Training(module, tokenizer, ctx, accounting, checkpoints, metrics_log)


def measure_fit(
    trainer: Any, metrics_log: Any, module: Any, batch: BatchPlan, started: float
) -> dict[str, Any]:
    """What a finished ``Trainer.fit`` measured (``actual.json``): steps, time, throughput, peak memory,
    and the batch plan it stepped with."""
    from vlmforge.training.metrics_log import peak_memory_bytes

    step_times = sorted(metrics_log.step_times)
    last = metrics_log.history[-1] if metrics_log.history else {}
    return {
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "median_step_seconds": step_times[len(step_times) // 2] if step_times else None,
        "samples_per_second": last.get("samples_per_s"),
        "peak_memory_bytes": peak_memory_bytes(module.device),
        "world_size": trainer.world_size,
        "batch": batch.to_json(),
    }


def fit_or_diverge(trainer: Any, module: Any, resume_from: Path | None) -> Any:
    """``trainer.fit`` (resuming from ``resume_from``); the ``Diverged`` stop if the loss became
    non-finite (its last finite step is saved), else None."""
    from vlmforge.training.callbacks import Diverged

    try:
        trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    except Diverged as stop:
        return stop
    return None


def record_divergence(metrics_log: Any, stop: Any) -> dict[str, Any]:
    """Say in metrics.jsonl (and return for result.json) at which step the loss stopped being finite."""
    event = {"step": stop.step + 1, "event": "stopped: non-finite loss", "saved_step": stop.step}
    metrics_log.write(event)
    return event


def fit_to_weights(
    recipe: TrainingRecipe,
    module: Any,
    directory: Path,
    batch: BatchPlan,
    label: str,
    announce: str,
    resume_from: Path | None,
    outcome_name: str = "result.json",
) -> dict[str, Any]:
    """Train a LLaVA ``module`` (resumable; stopped cleanly by SIGTERM, SIGINT or a non-finite loss) and
    save its plain weights (LoRA merged) as ``directory/model.safetensors``. Returns the outcome; rank 0
    also writes it (``outcome_name``), what was measured (``actual.json``) and ``plots/`` into
    ``directory``: a finetune stage's, or an align run's own."""
    from vlmforge.models.llava import plain_model, save_weights
    from vlmforge.training.callbacks import AtomicCheckpoint
    from vlmforge.training.loggers import build_loggers
    from vlmforge.training.metrics_log import MetricsLog
    from vlmforge.training.plots import draw_plots
    from vlmforge.training.trainer import build_trainer

    directory.mkdir(parents=True, exist_ok=True)
    checkpoints = AtomicCheckpoint(
        directory / "checkpoints", recipe.train.checkpoint.every_steps, recipe.train.checkpoint.keep_last
    )
    metrics_log = MetricsLog(
        directory / "metrics.jsonl",
        recipe.train.log_every_steps,
        batch.global_batch,
        build_loggers(recipe.logger, directory, label),
    )
    trainer = build_trainer(recipe, [checkpoints, metrics_log], str(directory), batch, module.block_classes())
    if trainer.is_global_zero:
        print(announce, file=sys.stderr)
    started = time.perf_counter()
    diverged = fit_or_diverge(trainer, module, resume_from)
    if trainer.is_global_zero:
        draw_plots(directory)
    if diverged or checkpoints.stopped:
        outcome = {
            "status": "diverged" if diverged else checkpoints.stopped,
            "steps": trainer.global_step,
            "checkpoint": str(checkpoints.last_path) if checkpoints.last_path else None,
        }
        if diverged and trainer.is_global_zero:
            outcome["stopped"] = record_divergence(metrics_log, diverged)
        return outcome
    model = plain_model(module.model)
    if trainer.is_global_zero:
        save_weights(model, directory / WEIGHTS)
    trainer.strategy.barrier("vlmforge-stage-weights")  # the next stage starts from them on every rank
    if not trainer.is_global_zero:
        return {"status": "completed", "steps": trainer.global_step}
    last = metrics_log.history[-1] if metrics_log.history else {}
    outcome = {
        "status": "completed",
        "steps": trainer.global_step,
        "checkpoint": str(checkpoints.final_path.relative_to(directory)) if checkpoints.final_path else None,
        "weights": WEIGHTS,
        "metrics": {k: v for k, v in last.items() if k not in ("epoch", "time_s")},
        "actual": measure_fit(trainer, metrics_log, module, batch, started),
    }
    write_json(directory / "actual.json", outcome["actual"])
    write_json(directory / outcome_name, outcome)
    return outcome
