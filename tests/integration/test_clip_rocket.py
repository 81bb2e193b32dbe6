"""CLIP-rocket's cross-modal augmentation trained from the CLI on its debug recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import pretrain_json, read_metrics


@pytest.mark.slow
def test_clip_rocket_debug_recipe_logs_both_terms_and_learns(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/clip-rocket-tiny", "eval=[{kind: zeroshot}]")
    records = [r for r in read_metrics(tmp_path / result["run_dir"]) if "loss" in r]
    for record in records:  # one strong view: the weak and strong terms weigh alike
        assert record["loss"] == pytest.approx((record["contrastive"] + record["augmented"]) / 2, abs=1e-5)
        assert record["augmented_logit_scale"] > 0
    first, last = records[0], records[-1]
    assert last["contrastive"] < first["contrastive"] and last["augmented"] < first["augmented"]
    assert result["metrics"]["eval"]["zeroshot"]["top1"] > 0.1  # above chance on the held-out digits
