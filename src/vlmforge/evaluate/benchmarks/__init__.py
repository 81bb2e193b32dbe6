"""Standard benchmarks read from their own file layouts at a local path (``config.benchmarks``), run on one
loaded model (``interop.inference.load_for_inference``: a run directory or an exported folder).

An explicit table, as ``vlmforge.interop.EXPORTERS``: task kind -> "module:function", imported only when
that benchmark runs. A runner is ``runner(model: InferenceModel, task, batch_size) -> metrics``; its
metrics say how many items it evaluated (``samples``) and dropped (``dropped``: unreadable images), and
may hold ``predictions``, one dict per evaluated item.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from vlmforge.config.benchmarks import BenchmarkTask
from vlmforge.errors import UserError

BENCHMARKS: dict[str, str] = {
    "imagenet": "vlmforge.evaluate.benchmarks.imagenet:imagenet",
    "karpathy_retrieval": "vlmforge.evaluate.benchmarks.karpathy:karpathy_retrieval",
    "karpathy_captioning": "vlmforge.evaluate.benchmarks.karpathy:karpathy_captioning",
    "sugarcrepe": "vlmforge.evaluate.benchmarks.pairs:sugarcrepe",
    "aro": "vlmforge.evaluate.benchmarks.pairs:aro",
    "vqav2": "vlmforge.evaluate.benchmarks.vqav2:run",
    "pope": "vlmforge.evaluate.benchmarks.pope:run",
    "mmbench": "vlmforge.evaluate.benchmarks.multiple_choice:run_mmbench",
    "scienceqa": "vlmforge.evaluate.benchmarks.multiple_choice:run_scienceqa",
    "refcoco": "vlmforge.evaluate.benchmarks.refcoco:run",
}


def is_benchmark(task: Any) -> bool:
    return isinstance(task, BenchmarkTask)


def run_benchmark(model: Any, task: Any, batch_size: int) -> dict[str, Any]:
    """The metrics of one benchmark task on a loaded model (``InferenceModel``), with its run time."""
    module, function = BENCHMARKS[task.kind].split(":")
    runner = getattr(importlib.import_module(module), function)
    start = time.perf_counter()
    metrics: dict[str, Any] = runner(model, task, batch_size)
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    return metrics


def task_problems(tasks: list[Any], kind: str, source: Path) -> list[UserError]:
    """Benchmarks a model of ``kind`` cannot run, and two results written to one file."""
    from vlmforge.config.evaluation import EVAL_TASKS

    supported = EVAL_TASKS.get(kind, ())
    problems = [
        UserError(
            f"tasks: {task.kind!r} does not apply to {source}, a {kind} model",
            hint=f"tasks it can run: {', '.join(supported)}",
        )
        for task in tasks
        if task.kind not in supported
    ]
    names = [task.result_name for task in tasks]
    problems += [
        UserError(
            f"tasks: two tasks write eval/{name}.json",
            hint="give each task of one kind its own name: (e.g. name: imagenet-v2)",
        )
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    return problems


def path_problems(tasks: list[Any]) -> list[UserError]:
    """Every file or folder a benchmark task names that is not there (all of them, before the model
    loads)."""
    problems = []
    for task in tasks:
        for field, path in task.paths().items():
            if not path.exists():
                problems.append(
                    UserError(
                        f"tasks: {task.result_name}.{field}: {path} does not exist",
                        hint=f"give the path of the benchmark's files on this machine "
                        f"({type(task).model_fields[field.split('[')[0]].description})",
                    )
                )
    return problems
