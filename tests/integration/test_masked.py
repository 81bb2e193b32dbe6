"""Masked family: masking and losses as pure functions, the model on open_clip towers, planning, CLI runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import last_json, pretrain_json, read_metrics, run_cli


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_mae_debug_recipe_trains_then_evaluates_with_a_linear_probe(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/mae-tiny")
    run_dir = tmp_path / result["run_dir"]
    records = read_metrics(run_dir)
    assert records[-1]["mim"] < records[0]["mim"] - 0.1, [r["mim"] for r in records]
    assert records[-1]["loss"] == records[-1]["mim"]
    probe = result["metrics"]["eval"]["linear_probe"]
    assert probe["top1"] > 0.5  # chance is 0.1
    evaluated = run_cli("eval", "--run", str(run_dir), "--format", "json", cwd=tmp_path, check=True)
    again = last_json(evaluated.stdout)
    assert set(again["metrics"]) == {"linear_probe"}  # the default task for a model without text
    assert again["metrics"]["linear_probe"]["top1"] == pytest.approx(probe["top1"])


@pytest.mark.slow
def test_flava_debug_recipe_trains_every_term_and_evaluates_zero_shot(tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, "debug/flava-tiny")
    records = read_metrics(tmp_path / result["run_dir"])
    first, last = records[0], records[-1]
    assert last["loss"] < first["loss"] - 0.3, [r["loss"] for r in records]
    for term in ("mim", "mlm", "contrastive"):
        assert last[term] < first[term], (term, [r[term] for r in records])
    evaluated = result["metrics"]["eval"]
    assert set(evaluated) == {"zeroshot", "retrieval", "linear_probe"}
    assert evaluated["zeroshot"]["top1"] > 0.2  # chance is 0.1
