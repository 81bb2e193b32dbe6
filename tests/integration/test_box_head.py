"""One CLI run of the X-VLM box-head recipe, cut short: the box loss is logged and falls, and the held-out
canvases are grounded beside the centre-box baseline in the run's result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import pretrain_json, read_metrics


@pytest.mark.slow
def test_box_head_recipe_lowers_the_box_loss_and_reports_grounding(tmp_path: Path) -> None:
    result = pretrain_json(
        tmp_path,
        "debug/clip-box-tiny",
        "train.max_steps=40",
        "train.log_every_steps=10",
        "data.canvases.count=600",
        "eval=[{kind: grounding, shown: 0}]",
    )
    records = [r for r in read_metrics(tmp_path / result["run_dir"]) if "loss" in r]
    for record in records:  # weight 1: the total is the two terms
        assert record["loss"] == pytest.approx(record["contrastive"] + record["box"], abs=1e-5)
    assert records[-1]["box"] < records[0]["box"]
    found = result["metrics"]["eval"]["grounding"]
    assert found["evaluated"] == 120 and found["baseline_size_from"] == "train"  # 20% of 600 held out
    for key in ("accuracy@0.5", "mean_iou", "baseline_accuracy@0.5", "baseline_mean_iou"):
        assert 0 <= found[key] <= 1
    assert found["baseline_mean_iou"] > 0  # the centre box of the mean size overlaps some objects
