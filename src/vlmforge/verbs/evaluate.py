"""`vlmforge eval`: evaluate a trained run, on its held-out split or on other data, or an exported model
(open_clip local-dir, or a transformers folder: LLaVA, CLIP, SigLIP) on given data; or either of them on
standard benchmarks read from their own files (``config.benchmarks``), with no data.

run directory -> its model and tokenizer (``runs.artifacts``) -> the data -> the tasks (those given,
else the run recipe's, else its family's defaults) -> ``eval/<task>.json`` in the run directory.
An align run is evaluated as its policy against its reference (the finetuned model it started from) on
preference pairs. No Trainer: evaluation runs the model directly.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.config.data import ConversationDataBase, DataBase, PreferenceDataBase
from vlmforge.config.schema import EvalRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.evaluate.results import EvalResult, default_tasks
from vlmforge.evaluate.tasks import evaluate_model
from vlmforge.families import family_for
from vlmforge.runs.artifacts import load_aligned, load_trained, run_verb


def run(recipe: EvalRecipe) -> EvalResult:
    """Evaluate a trained run (or an exported model); writes ``eval/<task>.json`` into the run directory
    (or the model folder), or into ``output``."""
    from vlmforge.data.sources import build_eval_data, train_val_split
    from vlmforge.evaluate.benchmarks import is_benchmark
    from vlmforge.interop.inference import is_exported_model

    torch.manual_seed(recipe.seed)
    if any(is_benchmark(task) for task in recipe.tasks or []):
        return _evaluate_benchmarks(recipe)
    if recipe.model is not None:
        if is_exported_model(recipe.model):
            return _evaluate_export(recipe)
        recipe = recipe.model_copy(update={"run": recipe.model, "model": None})  # a run directory
    assert recipe.run is not None
    verb = run_verb(recipe.run)
    raise_all(input_problems(verb, recipe))
    if verb == "align":
        return _evaluate_aligned(recipe)
    model, tokenizer, train_recipe, ckpt = load_trained(recipe.run, recipe.checkpoint)
    data = build_eval_data(train_recipe, recipe.data, recipe.data_split)
    ctx = family_for(train_recipe.model).models.context_length(train_recipe.model, model)
    tasks = list(
        recipe.tasks if recipe.tasks is not None else train_recipe.eval or default_tasks(train_recipe)
    )
    train = train_val_split(train_recipe.data)[0] if any(t.kind == "linear_probe" for t in tasks) else None
    with torch.no_grad():
        metrics = evaluate_model(
            train_recipe.model, model, tokenizer, ctx, data, tasks, recipe.batch_size, train
        )
    result = EvalResult(recipe.run, ckpt, data.name, metrics, recipe.output)
    result.write()
    return result


def _evaluate_benchmarks(recipe: EvalRecipe) -> EvalResult:
    """Benchmark tasks on one model, loaded once: a run directory or an exported folder. Every problem
    the recipe and the benchmarks' paths have is reported before the model loads; results go to the
    run's (or model folder's) ``eval/`` unless ``output`` says otherwise."""
    from vlmforge.evaluate.benchmarks import model_kind, path_problems, run_benchmark, task_problems
    from vlmforge.interop.inference import load_for_inference

    tasks = list(recipe.tasks or [])
    source = recipe.source
    kind = model_kind(source)
    known = task_problems(tasks, kind, source) if kind is not None else []
    raise_all(benchmark_recipe_problems(recipe) + known + path_problems(tasks))
    loaded = load_for_inference(source, recipe.device)
    raise_all(task_problems(tasks, loaded.kind, source))
    with torch.no_grad():
        metrics = {task.result_name: run_benchmark(loaded, task, recipe.batch_size) for task in tasks}
    data = "benchmarks: " + ", ".join(metrics)
    result = EvalResult(source, loaded.weights, data, metrics, recipe.output or source / "eval")
    result.write()
    return result


def benchmark_recipe_problems(recipe: EvalRecipe) -> list[UserError]:
    """Benchmarks read their own files and evaluate the model's final weights: no data, no other tasks."""
    from vlmforge.evaluate.benchmarks import is_benchmark

    problems = []
    others = [task.kind for task in recipe.tasks or [] if not is_benchmark(task)]
    if others:
        problems.append(
            UserError(
                f"tasks: {', '.join(others)} evaluate on data:, the other tasks are benchmarks (with their "
                "own files)",
                hint="evaluate the two in two eval recipes",
            )
        )
    if recipe.data is not None:
        problems.append(
            UserError(
                f"data.kind {recipe.data.kind!r}: benchmark tasks read their own files",
                hint="leave data unset (the tasks name their files)",
            )
        )
    if recipe.checkpoint is not None:
        problems.append(
            UserError(
                "checkpoint: benchmarks evaluate a run's final weights (or an exported model)",
                hint="leave checkpoint unset, or export that checkpoint's run and evaluate the export",
            )
        )
    return problems


# What each kind of run is evaluated on: the data kinds and the tasks it takes.
TAKES = {
    "pretrain": "image-caption data (data.kind webdataset, folder, ffcv or digits) with its model's tasks "
    "(those of zeroshot, retrieval, compositional, captioning, linear_probe it supports)",
    "finetune": "conversations (data.kind llava-json or digits-conversations) with task vqa",
    "align": "preference pairs (data.kind preference-json or digits-preferences), tasks vqa and preference",
}


def input_problems(verb: str, recipe: EvalRecipe) -> list[UserError]:
    """What the eval recipe asks of a ``verb`` run that such a run cannot do, found before its model is
    loaded: preference pairs and the preference task need an align run (its policy and reference); an
    align run is evaluated on preference pairs only."""
    problems = []
    data, tasks = recipe.data, recipe.tasks or []
    hint = f"a {verb} run takes {TAKES.get(verb, TAKES['pretrain'])}"
    if verb != "align" and isinstance(data, PreferenceDataBase):
        problems.append(
            UserError(
                f"data.kind {data.kind!r}: preference pairs evaluate an align run (its policy against its "
                f"reference); {recipe.run} is a {verb} run",
                hint=hint + "; or set run to an align run's directory",
            )
        )
    if verb != "align" and any(task.kind == "preference" for task in tasks):
        problems.append(
            UserError(
                f"tasks: 'preference' evaluates an align run (its policy against its reference); "
                f"{recipe.run} is a {verb} run",
                hint=hint,
            )
        )
    if verb == "align" and data is not None and not isinstance(data, PreferenceDataBase):
        problems.append(
            UserError(f"data.kind {data.kind!r}: an align run is evaluated on preference pairs", hint=hint)
        )
    return problems


def _evaluate_aligned(recipe: EvalRecipe) -> EvalResult:
    """An align run's final policy (or ``checkpoint``, a weights file) against its reference, on its
    held-out pairs or on other preference data, with the tasks of its recipe unless others are given."""
    from vlmforge.data.preferences import open_preferences, split_preferences
    from vlmforge.evaluate.preference import PreferenceReference

    policy, reference, tokenizer, align_recipe, weights = load_aligned(recipe.run, recipe.checkpoint)
    cfg = align_recipe.model
    assert cfg is not None
    side = cfg.vision.image_size
    data: Any
    if recipe.data is None:
        data = split_preferences(align_recipe.data, side)[1]
    else:
        assert isinstance(recipe.data, PreferenceDataBase)  # input_problems refused any other data
        data = (
            split_preferences(recipe.data, side)[1]
            if recipe.data_split == "val"
            else open_preferences(recipe.data, side)
        )
    tasks = list(recipe.tasks if recipe.tasks is not None else align_recipe.eval)
    with torch.no_grad():
        metrics = evaluate_model(
            cfg,
            policy,
            tokenizer,
            cfg.max_text_tokens,
            data,
            tasks,
            recipe.batch_size,
            reference=PreferenceReference(reference, align_recipe.dpo.beta),
        )
    result = EvalResult(recipe.run, weights, data.name, metrics, recipe.output)
    result.write()
    return result


def _evaluate_export(recipe: EvalRecipe) -> EvalResult:
    """An exported model (open_clip, transformers) on the given data, with the tasks given or its kind's
    defaults, exactly as its run would be evaluated on that data: image-caption data for a contrastive
    model, conversations for LLaVA. Results go to ``<model>/eval`` unless ``output`` says otherwise."""
    from vlmforge.interop.inference import load_for_inference

    path = recipe.source
    raise_all(export_problems(recipe))
    loaded = load_for_inference(path, "cpu")
    raise_all(export_data_problems(recipe, loaded.kind))
    tasks = list(recipe.tasks if recipe.tasks is not None else export_tasks(loaded))
    train, data = _export_data(recipe, loaded.transform, loaded.kind == "llava")
    if train is None and any(task.kind == "linear_probe" for task in tasks):
        raise UserError(
            "linear_probe fits on the data's training split: evaluate its held-out split",
            hint="set data_split: val (or use --data digits)",
        )
    with torch.no_grad():
        metrics = evaluate_model(
            loaded.kind,
            loaded.model,
            loaded.tokenizer,
            loaded.context_length,
            data,
            tasks,
            recipe.batch_size,
            train,
            prompter=loaded.prompt_ids if loaded.kind == "llava" else None,
        )
    result = EvalResult(path, loaded.weights, data.name, metrics, recipe.output or path / "eval")
    result.write()
    return result


def export_tasks(loaded: Any) -> list[Any]:
    """An export's default tasks: its kind's; for LLaVA, VQA with the answer length of its generation
    config (what its run's VQA evaluation allowed, in a vlmforge export)."""
    from vlmforge.config.schema import VqaTask, default_tasks_for

    if loaded.kind != "llava":
        return list(default_tasks_for(loaded.tasks))
    generation = getattr(loaded.model, "generation_config", None)
    longest = getattr(generation, "max_new_tokens", None)
    return [VqaTask(max_new_tokens=longest) if longest else VqaTask()]


def _export_data(recipe: EvalRecipe, transform: Any, conversations: bool) -> tuple[Any, Any]:
    """(the training split or None, the data evaluated), its images preprocessed exactly as the
    export's image transform says."""
    from vlmforge.data.sources import open_source, train_val_split

    update = {"mean": transform.mean, "std": transform.std}
    if conversations:
        from vlmforge.data.conversations import open_conversations, split_conversations

        cfg = recipe.data.model_copy(update=update)  # type: ignore[union-attr]
        if recipe.data_split == "val":
            return None, split_conversations(cfg, transform.size)[1]
        return None, open_conversations(cfg, transform.size)
    cfg = recipe.data.model_copy(update=update | {"image_size": transform.size})  # type: ignore[union-attr]
    return train_val_split(cfg) if recipe.data_split == "val" else (None, open_source(cfg))


EXPORT_DATA = "image-caption data (data.kind webdataset, folder, ffcv or digits)"
EXPORT_CONVERSATIONS = "conversations (data.kind llava-json or digits-conversations)"


def export_problems(recipe: EvalRecipe) -> list[UserError]:
    """What an exported model cannot be evaluated with, found before it is loaded: it keeps no data (nor
    held-out split) and one set of weights."""
    problems = []
    if recipe.data is None:
        problems.append(
            UserError(
                f"{recipe.source} is an exported model: it names no evaluation data",
                hint="give data: vlmforge eval --model DIR --data digits (contrastive models) or "
                "--data digits-conversations (LLaVA), or an eval recipe's data: section",
            )
        )
    if recipe.checkpoint is not None:
        problems.append(
            UserError("checkpoint: an exported model has one set of weights", hint="leave checkpoint unset")
        )
    return problems


def export_data_problems(recipe: EvalRecipe, kind: str) -> list[UserError]:
    """The data an exported model of ``kind`` is evaluated on: conversations for LLaVA (not preference
    pairs: an export has no reference model), image-caption data for the others."""
    data = recipe.data
    llava = kind == "llava"
    if llava and isinstance(data, ConversationDataBase) and not isinstance(data, PreferenceDataBase):
        return []
    if not llava and isinstance(data, DataBase):
        return []
    takes = EXPORT_CONVERSATIONS if llava else EXPORT_DATA
    return [
        UserError(
            f"data.kind {data.kind!r}: an exported {kind} model is evaluated on {takes}",  # type: ignore[union-attr]
            hint="vlmforge eval --model DIR --data "
            + ("digits-conversations" if llava else "digits")
            + ", or an eval recipe's data: section",
        )
    ]
