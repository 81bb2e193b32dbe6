"""Where per-shard tasks run: a local process pool (default) or Ray Data. Both return results in task
order, so the curation does not depend on the engine or the worker count."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlmforge.config.curate import CurateEngine, LocalEngine, RayEngine
from vlmforge.errors import missing_extra

Task = Any
Result = dict[str, Any]


def run_tasks(
    engine: CurateEngine,
    fn: Callable[[Task], Result],
    tasks: list[Task],
    on_done: Callable[[Result], None],
) -> list[Result]:
    """``fn`` over ``tasks``; ``on_done`` sees each result as it arrives; results return in task order."""
    if not tasks:
        return []
    if isinstance(engine, RayEngine):
        stream = _ray(engine, fn, tasks)
    else:
        assert isinstance(engine, LocalEngine)
        stream = _local(engine, fn, tasks)
    results: dict[int, Result] = {}
    for index, result in stream:
        results[index] = result
        on_done(result)
    return [results[i] for i in range(len(tasks))]


def local_workers(engine: LocalEngine, tasks: int) -> int:
    return max(1, min(engine.workers or os.cpu_count() or 1, tasks))


def _default_signals() -> None:
    """Pool workers die on SIGTERM, as the pool's shutdown expects: a forked worker would otherwise inherit
    whatever handler the parent installed (Ray's driver catches SIGTERM), and ``Pool.terminate`` would wait
    forever for a worker that ignores it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _indexed(fn: Callable[[Task], Result], item: tuple[int, Task]) -> tuple[int, Result]:
    return item[0], fn(item[1])


def _local(
    engine: LocalEngine, fn: Callable[[Task], Result], tasks: list[Task]
) -> Iterator[tuple[int, Result]]:
    workers = local_workers(engine, len(tasks))
    if workers == 1:
        for index, task in enumerate(tasks):
            yield index, fn(task)
        return
    from functools import partial

    # fork keeps imported modules (torch, open_clip) warm in the workers; elsewhere fork is unsafe
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(workers, initializer=_default_signals) as pool:
        yield from pool.imap_unordered(partial(_indexed, fn), list(enumerate(tasks)))


def _ray(engine: RayEngine, fn: Callable[[Task], Result], tasks: list[Task]) -> Iterator[tuple[int, Result]]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise missing_extra("ray", "ray") from None
    import json

    if not ray.is_initialized():
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "ERROR",
        }
        if engine.address is not None:
            options["address"] = engine.address
        else:
            options["num_cpus"] = engine.workers or os.cpu_count() or 1
            # local workers import the same vlmforge as the driver (a checkout, or site-packages)
            import vlmforge

            root = str(Path(vlmforge.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        ray.init(**options)
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress line reports the shards
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        index = int(row["index"])
        return {"index": index, "result": json.dumps(fn(tasks[index]))}

    rows = ray.data.from_items([{"index": i} for i in range(len(tasks))], override_num_blocks=len(tasks))
    mapped = rows.map(apply, concurrency=engine.workers, num_cpus=1)
    for row in mapped.iter_rows():
        yield int(row["index"]), json.loads(row["result"])
