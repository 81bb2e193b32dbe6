"""StableRep's multi-positive loss on two processes: caption ids gathered with the features."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import last_json, pretrain_json, read_metrics, run_cli


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_gathered_ids_match_one(tmp_path: Path) -> None:
    common = ["train.max_steps=6", "train.log_every_steps=1", "eval=[]"]
    recipe = "debug/clip-multipositive-tiny"
    single = pretrain_json(tmp_path, recipe, *common, "name=single")
    ddp = last_json(
        run_cli(
            "pretrain", "-c", recipe, *common, "name=ddp", "train.devices=2",
            "train.strategy.kind=ddp", "--format", "json", cwd=tmp_path, check=True,
        ).stdout
    )  # fmt: skip
    one, two = read_metrics(tmp_path / single["run_dir"]), read_metrics(tmp_path / ddp["run_dir"])
    assert len(one) == len(two) == 6
    for a, b in zip(one, two, strict=True):  # the same global batches, ids and positives across ranks
        for term in ("loss", "positives"):
            assert abs(a[term] - b[term]) <= 1e-4, (a["step"], term, a[term], b[term])
