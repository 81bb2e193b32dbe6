"""Runs people can look at: CSV and TensorBoard loggers beside metrics.jsonl, the eval tasks during
training, plots/ from metrics.jsonl, and all three continuing when a run is resumed."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import DEBUG_RECIPE, SHORT_RUN, pretrain_json, read_metrics, run_cli, step_losses

# The strategy tests' short run (20 steps, a loss every step, checkpoint at step 10), with two loggers and
# its eval tasks every 10 steps.
OBSERVED = [
    *(o for o in SHORT_RUN if o != "eval=[]"),
    "logger=[{kind: csv}, {kind: tensorboard}]",
    "train.eval_every_steps=10",
]


def _eval_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "eval" in r]


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished run, what it held then, and the same run resumed from its step-10 checkpoint."""
    cwd = tmp_path_factory.mktemp("observed")
    run_dir = cwd / pretrain_json(cwd, DEBUG_RECIPE, *OBSERVED)["run_dir"]
    first = {
        "records": read_metrics(run_dir),
        "plots_mtime": (run_dir / "plots" / "loss.png").stat().st_mtime_ns,
    }
    checkpoint = run_dir / "checkpoints" / "step-00000010.ckpt"
    resumed = pretrain_json(cwd, DEBUG_RECIPE, *OBSERVED, "--resume", str(checkpoint))
    return {"run_dir": run_dir, "first": first, "resumed": resumed}


def test_eval_during_training_appends_increasing_steps(observed: dict[str, Any]) -> None:
    evals = _eval_lines(observed["first"]["records"])
    assert [r["step"] for r in evals] == [10, 20]
    for record in evals:
        assert set(record) == {"step", "eval"}
        assert set(record["eval"]) == {"zeroshot", "retrieval"}  # the debug recipe's eval tasks
        assert 0.0 <= record["eval"]["zeroshot"]["top1"] <= 1.0
        assert 0.0 <= record["eval"]["retrieval"]["text_to_image_R@1"] <= 1.0
        assert all(isinstance(v, int | float | str) for m in record["eval"].values() for v in m.values())


def test_evaluating_during_training_leaves_the_training_unchanged(
    observed: dict[str, Any], single_run: Path
) -> None:
    first = {r["step"]: r["loss"] for r in observed["first"]["records"] if "loss" in r}
    assert first == step_losses(single_run)  # the same recipe trained without evaluations


def test_loggers_get_the_losses_and_evaluations_at_their_steps(observed: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {r["step"]: r["loss"] for r in observed["first"]["records"] if "loss" in r}
    assert sorted(losses) == list(range(1, 21))
    logs = observed["run_dir"] / "logs"

    with (logs / "csv" / "version_0" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["loss"]]
    assert {int(row["step"]): float(row["loss"]) for row in rows} == losses

    events = EventAccumulator(str(logs / "tensorboard" / "version_0"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "loss" in scalars and "lr" in scalars and "eval/zeroshot/top1" in scalars
    logged = {e.step: e.value for e in events.Scalars("loss")}
    assert sorted(logged) == sorted(losses)
    assert all(math.isclose(logged[s], losses[s], rel_tol=1e-6) for s in losses)  # stored as float32
    first_evals = _eval_lines(observed["first"]["records"])
    top1 = {e.step: e.value for e in events.Scalars("eval/zeroshot/top1")}
    assert top1.keys() == {10, 20}
    assert math.isclose(top1[20], first_evals[-1]["eval"]["zeroshot"]["top1"], rel_tol=1e-6)


def test_plots_are_drawn_and_redrawn_after_resume(observed: dict[str, Any]) -> None:
    plots = observed["run_dir"] / "plots"
    names = {p.name for p in plots.glob("*.png")}
    wanted = {"loss.png", "lr.png", "scale.png", "throughput.png", "eval-zeroshot.png", "eval-retrieval.png"}
    assert names == wanted
    for path in plots.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert (plots / "loss.png").stat().st_mtime_ns > observed["first"]["plots_mtime"]


def test_resume_keeps_appending(observed: dict[str, Any]) -> None:
    run_dir, resumed = observed["run_dir"], observed["resumed"]
    assert resumed["status"] == "completed" and Path(resumed["resumed_from"]).name == "step-00000010.ckpt"
    records = read_metrics(run_dir)
    before = len(observed["first"]["records"])
    assert records[:before] == observed["first"]["records"]  # appended, nothing rewritten
    assert [r["step"] for r in _eval_lines(records)] == [10, 20, 20]  # step 20 evaluated again
    assert sorted(step_losses(run_dir)) == list(range(1, 21))
    assert (run_dir / "logs" / "tensorboard" / "version_1").is_dir()  # each start logs a version
    assert (run_dir / "logs" / "csv" / "version_1" / "metrics.csv").is_file()


def test_validate_without_tensorboard_exits_2_with_the_install_hint(tmp_path: Path) -> None:
    hidden = tmp_path / "hide-tensorboard"
    hidden.mkdir()
    # a None entry in sys.modules makes importlib.util.find_spec (and imports) report the package missing
    (hidden / "sitecustomize.py").write_text('import sys\nsys.modules["tensorboard"] = None\n')
    import os

    path = os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        "validate", "-c", str(DEBUG_RECIPE), "logger=[{kind: csv}, {kind: tensorboard}]",
        cwd=tmp_path, env={"PYTHONPATH": path},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'vlmforge[tensorboard]'" in proc.stderr
    assert "Traceback" not in proc.stderr
