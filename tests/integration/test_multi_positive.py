"""StableRep's multi-positive loss trained from the CLI on its debug recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import pretrain_json, read_metrics


@pytest.mark.slow
def test_multi_positive_debug_recipe_trains_and_evaluates(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/clip-multipositive-tiny", "train.log_every_steps=5")
    records = [r for r in read_metrics(tmp_path / result["run_dir"]) if "loss" in r]
    assert [r["step"] for r in records] == list(range(5, 65, 5))
    # 8 runs of 4 images per batch: every query has its run's 4 positives, more when two runs share an id
    assert all(r["positives"] >= 4 and r["loss"] == r["contrastive"] for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    assert result["metrics"]["data"]["read"] == 60 * 32
    zeroshot = result["metrics"]["eval"]["zeroshot"]
    assert zeroshot["classes"] == 10 and zeroshot["top1"] > 0.1  # above chance on the held-out digits
    assert result["metrics"]["eval"]["retrieval"]["samples"] > 0
