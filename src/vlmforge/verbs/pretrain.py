"""`vlmforge pretrain`: train a model from a recipe, top to bottom.

data (accounted) -> plan + run dir (``runs.lifecycle``) -> module, tokenizer, callbacks and loggers
(``training.fit``, ``training.loggers``; the eval tasks every ``train.eval_every_steps``) -> Trainer.fit
(resumable) -> final checkpoint -> plots/ (``training.plots``) -> evaluation on the held-out split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmforge.config.schema import PretrainRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.runs.directory import manifest
from vlmforge.runs.lifecycle import RunResult, records_disk_full, start_run
from vlmforge.storage import write_json


@records_disk_full
def run(
    recipe: PretrainRecipe, resume: str = "never", confirm: Callable[[str], bool] | None = None
) -> RunResult | None:
    """Train; returns the result on global rank 0 and ``None`` on the other ranks.

    ``confirm`` asks the user before a run whose estimated cost is above ``plan.confirm_above_usd``."""
    import torch

    from vlmforge.data.accounting import DataOverBudget, budget_error, over_budget
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import save_tokenizer
    from vlmforge.evaluate.results import EvalResult, without_item_lists
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.runs.preflight import preflight
    from vlmforge.training.fit import build_training, fit_or_diverge, measure_fit, record_divergence
    from vlmforge.training.loggers import build_loggers
    from vlmforge.training.periodic_eval import PeriodicEval
    from vlmforge.training.plots import draw_plots
    from vlmforge.training.trainer import build_trainer

    raise_all(preflight(recipe))
    train_set, val_set = train_val_split(recipe.data)
    rejected, limit = len(train_set.rejected), recipe.data.max_bad_fraction
    if over_budget(rejected, train_set.source_size, limit):
        raise budget_error(train_set.name, rejected, train_set.source_size, limit, train_set.rejected)
    if len(train_set) < recipe.data.batch_size:
        raise UserError(
            f"data: {len(train_set)} training samples cannot fill one batch "
            f"of data.batch_size={recipe.data.batch_size}",
            hint="lower data.batch_size or add data",
        )
    if recipe.train.eval_every_steps and len(val_set) == 0:
        raise UserError(
            "train.eval_every_steps evaluates the held-out split, and data holds none out",
            hint="set data.val_fraction above 0, or unset train.eval_every_steps",
        )
    run_dir, point = start_run(recipe, resume, confirm)

    loggers = build_loggers(recipe.logger, run_dir, recipe.name)
    training = build_training(recipe, train_set, run_dir, loggers)
    module, tokenizer, ctx = training.module, training.tokenizer, training.context_length
    checkpoints, accounting, metrics_log = training.checkpoints, training.accounting, training.metrics_log
    callbacks = training.callbacks
    if recipe.train.eval_every_steps:
        evaluate = held_out_evaluation(recipe, tokenizer, ctx, val_set, train_set)
        callbacks.append(
            PeriodicEval(recipe.train.eval_every_steps, evaluate, run_dir / "metrics.jsonl", loggers)
        )
    batch = recipe.batch_plan()
    trainer = build_trainer(recipe, callbacks, str(run_dir), batch, module.block_classes())
    if trainer.is_global_zero:
        save_tokenizer(tokenizer, run_dir / "tokenizer.json")
        devices = {"accelerator": type(trainer.accelerator).__name__, "world_size": trainer.world_size}
        write_json(run_dir / "manifest.json", manifest(recipe.seed, train_set.fingerprint, devices))
        if point is not None:
            print(f"resuming from {point.checkpoint}", file=metrics_log.stream, flush=True)

    started = time.perf_counter()
    resumed_from = point.checkpoint if point else None
    try:
        diverged = fit_or_diverge(trainer, module, resumed_from)
    except DataOverBudget as stop:  # the run says why it ended before the error is shown
        if trainer.is_global_zero:
            metrics = {"data": accounting.summary(), "stopped": {"reason": stop.message}}
            RunResult(
                run_dir, "failed", trainer.global_step, checkpoints.last_path, resumed_from, metrics
            ).write()
            draw_plots(run_dir)
        raise
    if not trainer.is_global_zero:
        return None
    draw_plots(run_dir)

    status = "diverged" if diverged else checkpoints.stopped or "completed"
    ckpt = checkpoints.final_path if status == "completed" else checkpoints.last_path
    last = metrics_log.history[-1] if metrics_log.history else {}
    train_metrics = {
        k: v for k, v in last.items() if k not in ("epoch", "time_s") and not k.startswith("data_")
    }
    metrics: dict[str, Any] = {"train": train_metrics, "data": accounting.summary()}
    if diverged:
        metrics["stopped"] = record_divergence(metrics_log, diverged)
    write_json(run_dir / "actual.json", measure_fit(trainer, metrics_log, module, batch, started))
    if status == "completed" and recipe.eval and len(val_set) > 0:
        assert ckpt is not None
        model = model_for_eval(recipe, module, tokenizer.vocab_size, ckpt)
        with torch.no_grad():
            evaluated = evaluate_model(
                recipe.model, model, tokenizer, ctx, val_set, list(recipe.eval), train_data=train_set
            )
        EvalResult(run_dir, ckpt, val_set.name, evaluated).write()
        metrics["eval"] = without_item_lists(evaluated)
    result = RunResult(run_dir, status, trainer.global_step, ckpt, resumed_from, metrics)
    result.write()
    return result


def model_for_eval(recipe: PretrainRecipe, module: Any, vocab_size: int, checkpoint: Path) -> Any:
    """The trained model on CPU for the held-out evaluation: the module's own, or rebuilt from the final
    checkpoint (as ``vlmforge eval`` does) when the module's copy is sharded across ranks or compiled."""
    from vlmforge.runs.artifacts import pretrained_model
    from vlmforge.training.requirements import is_sharded

    if not (is_sharded(recipe) or recipe.train.compile):
        return module.model.to("cpu")
    return pretrained_model(recipe, vocab_size, checkpoint)


def held_out_evaluation(
    recipe: PretrainRecipe, tokenizer: Any, context_length: int, val_set: Any, train_set: Any
) -> Callable[[Any], dict[str, dict[str, Any]]]:
    """The recipe's eval tasks on the held-out split, as the end-of-run evaluation runs them (on the CPU,
    probes fitted on the training split): what ``train.eval_every_steps`` runs during training."""
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.training.periodic_eval import cpu_model

    def evaluate(model: Any) -> dict[str, dict[str, Any]]:
        return evaluate_model(
            recipe.model,
            cpu_model(model),
            tokenizer,
            context_length,
            val_set,
            list(recipe.eval),
            train_data=train_set,
        )

    return evaluate
