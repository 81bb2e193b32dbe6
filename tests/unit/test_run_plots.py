"""plots/ from a metrics.jsonl alone: gaps, null and non-finite values, a crash's cut line, a resumed run's
repeated steps (the latest record of a step wins), and drawing that never fails a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmforge.training.plots import (
    draw_plots,
    eval_series,
    figures,
    fit_folders,
    main,
    plot_metrics,
    read_records,
    train_series,
)

# A run that logged steps 1, 2 (loss NaN, written as null) and 4 (step 3 not logged), evaluated at step 4,
# crashed, resumed from its step-2 checkpoint and logged steps 3 and 4 again, evaluated step 4 again,
# then stopped on a non-finite loss; the crash cut its last line short.
LINES = [
    {
        "step": 1,
        "epoch": 0,
        "loss": 2.0,
        "contrastive": 2.0,
        "logit_scale": 14.2,
        "lr": 1e-3,
        "samples_per_s": 100.0,
        "time_s": 0.1,
        "data_read": 32,
    },
    {
        "step": 2,
        "epoch": 0,
        "loss": None,
        "contrastive": None,
        "logit_scale": 14.3,
        "lr": 2e-3,
        "time_s": 0.2,
    },
    {
        "step": 4,
        "epoch": 0,
        "loss": 1.5,
        "contrastive": 1.5,
        "logit_scale": 14.4,
        "lr": 3e-3,
        "samples_per_s": 120.0,
        "time_s": 0.4,
    },
    {"step": 4, "eval": {"zeroshot": {"top1": 0.2, "classes": 10, "seconds": 0.5, "match": "label"}}},
    {"step": 3, "epoch": 0, "loss": 1.8, "contrastive": 1.7, "lr": 2.5e-3, "time_s": 0.1},
    {"step": 4, "epoch": 0, "loss": 1.4, "contrastive": 1.3, "lr": 3e-3, "samples_per_s": 130.0},
    {
        "step": 4,
        "eval": {"zeroshot": {"top1": 0.3, "classes": 10, "seconds": 0.4}, "retrieval": {"R@1": 0.1}},
    },
    {"step": 5, "event": "stopped: non-finite loss", "saved_step": 4},
]


@pytest.fixture
def metrics(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in LINES) + "\n" + '{"step": 6, "lo'
    path.write_text(text)
    return path


def test_latest_record_of_a_step_wins_and_missing_values_are_gaps(metrics: Path) -> None:
    records, unreadable = read_records(metrics)
    assert len(records) == len(LINES) and unreadable == 1
    series = train_series(records)
    assert series["loss"] == [(1, 2.0), (3, 1.8), (4, 1.4)]
    assert series["contrastive"] == [(1, 2.0), (3, 1.7), (4, 1.3)]
    assert series["logit_scale"] == [(1, 14.2), (2, 14.3), (4, 14.4)]  # the resumed run did not log it
    assert series["samples_per_s"] == [(1, 100.0), (4, 130.0)]
    assert set(series) == {"loss", "contrastive", "logit_scale", "lr", "samples_per_s"}  # no bookkeeping
    assert eval_series(records) == {"zeroshot": {"top1": [(4, 0.3)]}, "retrieval": {"R@1": [(4, 0.1)]}}


def test_one_figure_per_topic_and_per_eval_task(metrics: Path) -> None:
    records, _ = read_records(metrics)
    drawn = figures(records)
    assert list(drawn) == [
        "loss.png",
        "lr.png",
        "scale.png",
        "throughput.png",
        "eval-zeroshot.png",
        "eval-retrieval.png",
    ]
    assert list(drawn["loss.png"][1]) == ["loss", "contrastive"]
    assert list(drawn["scale.png"][1]) == ["logit_scale"]


def test_plots_are_png_files(metrics: Path, tmp_path: Path) -> None:
    paths = plot_metrics(metrics, tmp_path / "plots")
    assert {p.name for p in paths} == set(figures(read_records(metrics)[0]))
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left


def test_a_failed_drawing_warns_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.jsonl").mkdir()  # unreadable as a file
    assert draw_plots(tmp_path) == []
    warning = capsys.readouterr().err
    assert warning.startswith("warning: plots of") and "IsADirectoryError" in warning


def test_redraw_command_finds_each_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    for stage in ("align", "instruct"):
        (run / "stages" / stage).mkdir(parents=True)
        (run / "stages" / stage / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert fit_folders(run) == [run / "stages" / "align", run / "stages" / "instruct"]
    assert main([str(run)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run / "stages" / s / "plots" / "loss.png") for s in ("align", "instruct")]
    assert main([str(tmp_path / "empty")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
