"""StableRep's multi-positive loss trained from the CLI on its debug recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import pretrain_json, read_metrics, step_losses


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


@pytest.mark.slow
def test_resumed_run_draws_the_same_grouped_batches(tmp_path: Path) -> None:
    common = ["train.max_steps=20", "train.log_every_steps=1", "train.checkpoint.every_steps=10", "eval=[]"]
    run_dir = tmp_path / pretrain_json(tmp_path, "debug/clip-multipositive-tiny", *common)["run_dir"]
    uninterrupted = step_losses(run_dir)
    checkpoint = run_dir / "checkpoints" / "step-00000010.ckpt"
    resumed = pretrain_json(tmp_path, "debug/clip-multipositive-tiny", *common, "--resume", str(checkpoint))
    assert resumed["steps"] == 20 and Path(resumed["resumed_from"]).name == checkpoint.name
    again = step_losses(tmp_path / resumed["run_dir"])
    for step in range(11, 21):  # same batches (runs of 4 per caption id) and weights after the resume
        assert again[step] == pytest.approx(uninterrupted[step], abs=1e-5), step
