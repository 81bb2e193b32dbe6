"""NegCLIP hard negatives, the SLIP self-supervised term and the compositional evaluation: the pure functions,
their split-over-ranks equivalence, and one CLI run of each debug recipe (2-process DDP run marked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import pretrain_json, read_metrics


# ------------------------------------------------------------------------------------------- CLI runs
@pytest.mark.slow
def test_negclip_debug_recipe_trains_and_probes_word_order(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/negclip-tiny")
    records = read_metrics(tmp_path / result["run_dir"])
    assert all({"hard_negative", "hard_negative_acc"} <= r.keys() for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    found = result["metrics"]["eval"]["compositional"]
    assert found["images"] > 0 and 0 <= found["accuracy"] <= 1
    assert found["accuracy"] > found["chance"]  # trained against reorderings, it ranks the caption first
    saved = json.loads((tmp_path / result["run_dir"] / "eval" / "compositional.json").read_text())
    assert saved["metrics"]["accuracy"] == found["accuracy"]


@pytest.mark.slow
def test_slip_debug_recipe_logs_and_lowers_the_ssl_term(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/slip-tiny", "eval=[{kind: zeroshot}]")
    records = read_metrics(tmp_path / result["run_dir"])
    for record in records:
        assert record["loss"] == pytest.approx(record["contrastive"] + record["ssl"], abs=1e-5)  # weight 1
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["ssl"] < records[0]["ssl"]
    assert result["metrics"]["eval"]["zeroshot"]["top1"] > 0
