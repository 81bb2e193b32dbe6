"""NegCLIP hard negatives, the SLIP self-supervised term and the compositional evaluation: the pure functions,
their split-over-ranks equivalence, and one CLI run of each debug recipe (2-process DDP run marked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEBUG_RECIPE, last_json, pretrain_json, read_metrics, run_cli


@pytest.mark.slow
@pytest.mark.distributed
def test_both_switches_on_two_processes_match_one(tmp_path: Path) -> None:
    common = [
        "model.hard_negatives={}",
        "model.ssl={hidden_dim: 32, out_dim: 16, crop_scale: [0.5, 1.0]}",
        "train.max_steps=6",
        "train.log_every_steps=1",
        "eval=[]",
    ]
    single = pretrain_json(tmp_path, DEBUG_RECIPE, *common, "name=single")
    ddp = last_json(
        run_cli(
            "pretrain", "-c", str(DEBUG_RECIPE), *common, "name=ddp", "train.devices=2",
            "train.strategy.kind=ddp", "--format", "json", cwd=tmp_path, check=True,
        ).stdout
    )  # fmt: skip
    one, two = read_metrics(tmp_path / single["run_dir"]), read_metrics(tmp_path / ddp["run_dir"])
    assert len(one) == len(two) == 6
    for a, b in zip(one, two, strict=True):  # same negatives and views per sample, gathered features
        for term in ("loss", "hard_negative", "ssl"):
            assert abs(a[term] - b[term]) <= 1e-4, (a["step"], term, a[term], b[term])
