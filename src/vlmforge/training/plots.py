"""Plots of a run, drawn from its metrics.jsonl alone (so a run that crashed and resumed is drawn whole):
``plots/loss.png`` (the loss and each loss term), ``lr.png``, ``scale.png`` (logit scale / bias or
temperature, when recorded), ``throughput.png`` (samples/s) and ``eval-<task>.png`` per evaluated task
(``train.eval_every_steps``). A resumed run repeats the steps after its checkpoint: the latest record of a
step wins. Missing, null and non-finite values are left out.

Training verbs draw them when a fit ends (``draw_plots``, which only warns if drawing fails); redraw with
``python -m vlmforge.training.plots RUN_DIR``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError
from vlmforge.storage import writing

PLOTS = "plots"
METRICS = "metrics.jsonl"
# Fields of a training record that are not curves of their own, or are drawn in their own figure.
BOOKKEEPING = ("step", "epoch", "time_s", "saved_step")
RATES = ("lr", "samples_per_s")
SCALES = ("logit_scale", "logit_bias", "temperature")
EVAL_TIME = "seconds"  # how long a task took: not a result. Its integers are counts (samples, classes).

Series = list[tuple[int, float]]  # (optimizer step, value), by step


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a metrics.jsonl in file order, and how many lines could not be read (a line cut
    short by a crash)."""
    records, unreadable = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def latest_per_step(pairs: Iterable[tuple[int, Any]]) -> Series:
    """One point per step, the last given for it (a resumed run's), sorted; steps whose last value is not
    a finite number are left out."""
    by_step: dict[int, Any] = {}
    for step, value in pairs:
        by_step[step] = value
    return [(step, float(value)) for step, value in sorted(by_step.items()) if _finite(value)]


def train_series(records: list[dict[str, Any]]) -> dict[str, Series]:
    """{field: series} of every numeric field of the training records, in first-seen order."""
    training = [r for r in records if "eval" not in r and "event" not in r]
    names = dict.fromkeys(
        key
        for r in training
        for key, value in r.items()
        if key not in BOOKKEEPING and not key.startswith("data_") and (_finite(value) or value is None)
    )
    series = {name: latest_per_step((r["step"], r[name]) for r in training if name in r) for name in names}
    return {name: points for name, points in series.items() if points}


def eval_series(records: list[dict[str, Any]]) -> dict[str, dict[str, Series]]:
    """{task: {metric: series}} of the evaluations during training: each task's results, the fractional
    numbers (its integers count what was evaluated: samples, classes, templates)."""
    evals = [r for r in records if isinstance(r.get("eval"), dict)]
    tasks = dict.fromkeys(task for r in evals for task, m in r["eval"].items() if isinstance(m, dict))
    result = {}
    for task in tasks:
        runs = [(r["step"], r["eval"][task]) for r in evals if isinstance(r["eval"].get(task), dict)]
        metrics = dict.fromkeys(
            k for _, m in runs for k, v in m.items() if k != EVAL_TIME and isinstance(v, float) and _finite(v)
        )
        series = {k: latest_per_step((step, m.get(k)) for step, m in runs) for k in metrics}
        result[task] = {k: points for k, points in series.items() if points}
    return {task: series for task, series in result.items() if series}


def figures(records: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Series]]]:
    """{file name: (title, {panel: series})} for every figure with something to draw."""
    train = train_series(records)
    losses = {k: v for k, v in train.items() if k not in RATES and k not in SCALES}
    losses = dict(sorted(losses.items(), key=lambda item: item[0] != "loss"))  # the total first
    drawn = {
        "loss.png": ("training loss", losses),
        "lr.png": ("learning rate", {k: v for k, v in train.items() if k == "lr"}),
        "scale.png": ("logit scale", {k: v for k, v in train.items() if k in SCALES}),
        "throughput.png": ("throughput", {k: v for k, v in train.items() if k == "samples_per_s"}),
    }
    for task, series in eval_series(records).items():
        drawn[f"eval-{task}.png"] = (f"eval: {task} (held-out split)", series)
    return {name: figure for name, figure in drawn.items() if figure[1]}


def plot_metrics(metrics: Path, folder: Path) -> list[Path]:
    """Draw the figures of one metrics.jsonl into ``folder``; the paths written."""
    records, _ = read_records(metrics)
    folder.mkdir(parents=True, exist_ok=True)
    return [_draw(title, panels, folder / name) for name, (title, panels) in figures(records).items()]


def _draw(title: str, panels: dict[str, Series], path: Path) -> Path:
    """One panel per series, stacked, sharing the step axis; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(panels), 1, figsize=(7, 1.1 + 2.2 * len(panels)), dpi=120, sharex=True, squeeze=False
    )
    for axis, (name, points) in zip(axes[:, 0], panels.items(), strict=True):
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, marker="o" if len(points) <= 30 else None, markersize=3)
        axis.set_ylabel(name.replace("_", " "))
        axis.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    figure.suptitle(title)
    figure.tight_layout()
    with writing(path, sync=False) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def fit_folders(run_dir: Path) -> list[Path]:
    """The folders of a run that hold a metrics.jsonl: the run itself, or each finetune stage."""
    candidates = [run_dir, *sorted(p for p in (run_dir / "stages").glob("*") if p.is_dir())]
    return [folder for folder in candidates if (folder / METRICS).is_file()]


def redraw(run_dir: Path) -> list[Path]:
    """Draw ``plots/`` of every fit of a run directory (the run, or each finetune stage); the paths."""
    folders = fit_folders(run_dir)
    if not folders:
        raise UserError(
            f"{run_dir}: no {METRICS} here or in stages/*/",
            hint="give a run directory written by vlmforge pretrain, finetune or align",
        )
    return [path for folder in folders for path in plot_metrics(folder / METRICS, folder / PLOTS)]


def draw_plots(directory: Path) -> list[Path]:
    """``plots/`` of a fit that just ended; a failure is a warning on stderr, never the run's failure."""
    try:
        return plot_metrics(directory / METRICS, directory / PLOTS)
    except Exception as error:  # the run's results are written: a figure is not worth failing it
        print(
            f"warning: plots of {directory} not drawn ({type(error).__name__}: {error}); "
            f"redraw with `python -m vlmforge.training.plots {directory}`",
            file=sys.stderr,
            flush=True,
        )
        return []


def main(argv: list[str]) -> int:
    """``python -m vlmforge.training.plots RUN_DIR...``: redraw; 2 on bad input, as the vlmforge command."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m vlmforge.training.plots RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 0 if argv else 2
    try:
        for run_dir in argv:
            for path in redraw(Path(run_dir)):
                print(path)
    except UserError as error:
        print(f"error: {error.message}\nhint: {error.hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
