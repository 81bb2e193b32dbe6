"""`vlmforge pretrain`: train a model from a recipe, top to bottom.

setup run dir -> data + tokenizer -> model -> Trainer.fit (resumable) -> final checkpoint -> evaluation.
Under DDP, Lightning re-launches this same command once per extra device; those processes join rank 0's
run directory through the ``VLMFORGE_RUN_DIR`` environment variable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.load import dump_recipe, read_yaml
from vlmforge.config.schema import PretrainRecipe, TrainingRecipe
from vlmforge.errors import UserError
from vlmforge.launch import global_rank, launched_world_size
from vlmforge.runs import (
    RESUME_ENV,
    RUN_DIR_ENV,
    SPAWN_ENV,
    ResumePoint,
    create_run_dir,
    find_resume_point,
    is_completed,
    manifest,
    resume_point_in,
    write_json,
)

# Fields that may differ between a run and the recipe that resumes it.
# The device layout may change: the data position is kept in global optimizer steps (same global batch).
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_every_steps",
    "train.record_sample_ids",
    "train.checkpoint",
    "train.devices",
    "train.num_nodes",
    "train.micro_batch_size",
    "train.accelerator",
    "train.strategy",
    "data.num_workers",
    "logger",
    "eval",
    "plan",
)


@dataclass
class PretrainResult:
    run_dir: Path
    status: str  # "completed" | "preempted"
    steps: int
    checkpoint: Path | None
    resumed_from: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "steps": self.steps,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "metrics": self.metrics,
        }


def prepare_run(recipe: TrainingRecipe, resume: str) -> tuple[Path, ResumePoint | None]:
    """Pick the run directory (new, resumed, or given by a launch script) and write the resolved recipe."""
    mine = os.environ.get(SPAWN_ENV) == str(os.getpid())
    if SPAWN_ENV in os.environ and not mine:  # started by our rank 0 through Lightning's launcher
        resume_from = os.environ.get(RESUME_ENV)
        point = ResumePoint(Path(os.environ[RUN_DIR_ENV]), Path(resume_from)) if resume_from else None
        return Path(os.environ[RUN_DIR_ENV]), point
    preset = None if mine else os.environ.get(RUN_DIR_ENV)
    if preset:  # a torchrun / srun script chose one run directory for every rank
        return _join_preset_run(recipe, Path(preset), resume)
    if launched_world_size() > 1:
        raise UserError(
            f"started as {launched_world_size()} processes by torchrun/srun without {RUN_DIR_ENV}: "
            "the ranks cannot agree on a run directory",
            hint="generate the launch script with: vlmforge pretrain -c RECIPE --emit-launch torchrun|slurm",
        )
    point = find_resume_point(recipe.output_dir, recipe.name, resume)
    if point is not None:
        _check_same_recipe(recipe, point.run_dir)
        run_dir = point.run_dir
    else:
        run_dir = create_run_dir(recipe.output_dir, recipe.name)
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    os.environ |= {RUN_DIR_ENV: str(run_dir), RESUME_ENV: str(point.checkpoint) if point else ""}
    os.environ[SPAWN_ENV] = str(os.getpid())
    return run_dir, point


def _join_preset_run(recipe: TrainingRecipe, run_dir: Path, resume: str) -> tuple[Path, ResumePoint | None]:
    if is_completed(run_dir):
        raise UserError(f"{RUN_DIR_ENV}={run_dir} holds a completed run", hint="choose a new run directory")
    if resume == "never":
        point = None
    elif resume == "auto":
        point = resume_point_in(run_dir)
    else:
        point = find_resume_point(recipe.output_dir, recipe.name, resume)
    if global_rank() == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if point is not None:
            _check_same_recipe(recipe, run_dir)
        (run_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    return run_dir, point


def _check_same_recipe(recipe: TrainingRecipe, run_dir: Path) -> None:
    saved_file = run_dir / "recipe.yaml"
    if not saved_file.is_file():
        return
    saved, now = _flatten(read_yaml(saved_file)), _flatten(recipe.model_dump(mode="json"))
    changed = sorted(
        k
        for k in saved.keys() | now.keys()
        if saved.get(k) != now.get(k) and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    )
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise UserError(
            f"cannot resume {run_dir}: the recipe differs from the run's ({shown})",
            hint="resume with the run's own recipe.yaml, or start a new run with --resume never",
        )
    _check_checkpoint_format(saved, recipe, run_dir)


# Strategies that read each other's checkpoints: Lightning's one file (optimizer states in the optimizer's
# parameter order), FSDP's folders or files (keyed by parameter name, resharded on load), DeepSpeed's ZeRO
# folders (optimizer states partitioned per rank).
CHECKPOINT_FORMAT = {"auto": "lightning", "ddp": "lightning", "fsdp": "fsdp", "deepspeed": "deepspeed"}


def _check_checkpoint_format(saved: dict[str, Any], recipe: PretrainRecipe, run_dir: Path) -> None:
    before, now = saved.get("train.strategy.kind", "auto"), recipe.train.strategy.kind
    if CHECKPOINT_FORMAT[before] != CHECKPOINT_FORMAT[now]:
        raise UserError(
            f"cannot resume {run_dir} with train.strategy.kind {now}: its checkpoints were written by "
            f"{before}, in a format {now} does not read",
            hint=f"resume with train.strategy.kind={before}",
        )
    devices, nodes = saved.get("train.devices", 1), saved.get("train.num_nodes", 1)
    if now == "deepspeed" and devices * nodes != recipe.world_size:
        raise UserError(
            f"cannot resume {run_dir} on {recipe.world_size} devices: its DeepSpeed ZeRO checkpoints hold "
            f"optimizer states partitioned over {devices * nodes}",
            hint=f"resume with train.devices={devices} train.num_nodes={nodes}",
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): data}


def is_launched_worker() -> bool:
    """Any process but global rank 0 (started by Lightning's launcher, torchrun or srun)."""
    return global_rank() != 0


def estimate_and_confirm(recipe: TrainingRecipe, confirm: Callable[[str], bool] | None) -> dict[str, Any]:
    """Print the plan for the devices about to be used; ask before an expensive run if ``confirm`` is set."""
    import sys

    from vlmforge.plan import describe_estimate, pre_run_estimate

    estimate = pre_run_estimate(recipe)
    print(describe_estimate(estimate), file=sys.stderr, flush=True)
    usd = estimate.get("usd")
    if confirm is not None and usd is not None and usd > recipe.plan.confirm_above_usd:
        limit = recipe.plan.confirm_above_usd
        question = f"estimated ${usd:,.0f} is above plan.confirm_above_usd (${limit:,.0f}); start?"
        if not confirm(question):
            raise UserError(
                "run cancelled before it started; nothing was written", hint="pass --yes to skip the question"
            )
    return estimate


def start_run(
    recipe: TrainingRecipe, resume: str, confirm: Callable[[str], bool] | None
) -> tuple[Path, ResumePoint | None]:
    """Print the plan (asking first above ``plan.confirm_above_usd``), pick the run directory, save the
    plan there and seed everything: how every training verb starts."""
    import lightning.pytorch as pl

    estimate = None if is_launched_worker() else estimate_and_confirm(recipe, confirm)
    run_dir, point = prepare_run(recipe, resume)
    if estimate is not None:
        write_json(run_dir / "plan.json", estimate)
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    return run_dir, point


def measured(trainer: Any, metrics_log: Any, module: Any, started: float) -> dict[str, Any]:
    """What a finished ``Trainer.fit`` measured (``actual.json``): steps, time, throughput, peak memory."""
    from vlmforge.training.callbacks import peak_memory_bytes

    step_times = sorted(metrics_log.step_times)
    last = metrics_log.history[-1] if metrics_log.history else {}
    return {
        "steps": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "median_step_seconds": step_times[len(step_times) // 2] if step_times else None,
        "samples_per_second": last.get("samples_per_s"),
        "peak_memory_bytes": peak_memory_bytes(module.device),
        "world_size": trainer.world_size,
    }


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
    pretrain run writing into ``run_dir``; also what `plan --calibrate` times."""
    from vlmforge.data.loader import CaptionedImages
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.families import family_for
    from vlmforge.training.callbacks import AtomicCheckpoint, DataAccounting, MetricsLog

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
    module.train_data = CaptionedImages(train_set, tokenizer, ctx, recipe.seed)
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


def run(
    recipe: PretrainRecipe, resume: str = "never", confirm: Callable[[str], bool] | None = None
) -> PretrainResult | None:
    """Train; returns the result on global rank 0 and ``None`` on the other ranks.

    ``confirm`` asks the user before a run whose estimated cost is above ``plan.confirm_above_usd``."""
    import torch

    from vlmforge.data.accounting import budget_error, over_budget
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import save_tokenizer
    from vlmforge.evaluate import EvalResult, evaluate_model, write_eval_results
    from vlmforge.training.trainer import build_loggers, build_trainer, check_logger_installed, check_runnable

    check_logger_installed(recipe.logger)
    check_runnable(recipe)
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
    run_dir, point = start_run(recipe, resume, confirm)

    training = build_training(
        recipe, train_set, run_dir, build_loggers(recipe.logger, str(run_dir), recipe.name)
    )
    module, tokenizer, ctx = training.module, training.tokenizer, training.context_length
    checkpoints, accounting, metrics_log = training.checkpoints, training.accounting, training.metrics_log
    trainer = build_trainer(recipe, training.callbacks, str(run_dir), module.block_classes())
    if trainer.is_global_zero:
        save_tokenizer(tokenizer, run_dir / "tokenizer.json")
        devices = {"accelerator": type(trainer.accelerator).__name__, "world_size": trainer.world_size}
        write_json(run_dir / "manifest.json", manifest(recipe.seed, train_set.fingerprint, devices))
        if point is not None:
            print(f"resuming from {point.checkpoint}", file=metrics_log.stream, flush=True)

    started = time.perf_counter()
    trainer.fit(module, ckpt_path=str(point.checkpoint) if point else None, weights_only=True)
    if not trainer.is_global_zero:
        return None

    status = "preempted" if checkpoints.preempted else "completed"
    ckpt = checkpoints.final_path if status == "completed" else None
    last = metrics_log.history[-1] if metrics_log.history else {}
    train_metrics = {
        k: v for k, v in last.items() if k not in ("epoch", "time_s") and not k.startswith("data_")
    }
    metrics: dict[str, Any] = {"train": train_metrics, "data": accounting.summary()}
    write_json(run_dir / "actual.json", measured(trainer, metrics_log, module, started))
    if status == "completed" and recipe.eval and len(val_set) > 0:
        assert ckpt is not None
        model = model_for_eval(recipe, module, tokenizer.vocab_size, ckpt)
        with torch.no_grad():
            metrics["eval"] = evaluate_model(
                recipe.model, model, tokenizer, ctx, val_set, list(recipe.eval), train_data=train_set
            )
        write_eval_results(run_dir, EvalResult(run_dir, ckpt, val_set.name, metrics["eval"]).to_json())
    result = PretrainResult(
        run_dir, status, trainer.global_step, ckpt, point.checkpoint if point else None, metrics
    )
    payload = result.to_json()
    if ckpt is not None:
        payload["checkpoint"] = str(ckpt.relative_to(run_dir))
    write_json(run_dir / "result.json", payload)
    return result


def model_for_eval(recipe: PretrainRecipe, module: Any, vocab_size: int, checkpoint: Path) -> Any:
    """The trained model on CPU for the held-out evaluation: the module's own, or rebuilt from the final
    checkpoint (as ``vlmforge eval`` does) when the module's copy is sharded across ranks or compiled."""
    from vlmforge.families import family_for
    from vlmforge.models.contrastive import load_weights
    from vlmforge.training.trainer import is_sharded

    if not (is_sharded(recipe) or recipe.train.compile):
        return module.model.to("cpu")
    cfg = recipe.model.model_copy(update={"pretrained": None})
    model = family_for(cfg).models.build_model(cfg, vocab_size)
    load_weights(model, checkpoint)
    return model
