"""A tiny LLaVA answers referring expressions with Kosmos-2 location tokens, trained from the CLI on the
offline canvases: the run keeps the tokens in its tokenizer, evaluates boxes beside the centre-box
baseline and draws them; the full debug recipe beats the baseline by a wide margin (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, last_json, run_cli
from vlmforge.evaluate.grounding import centre_box, grounding_scores

RECIPE = REPO / "recipes" / "debug" / "llava-grounding-tiny.yaml"
SHORT = ("stages.0.max_steps=6", "stages.0.data.count=120", "eval.0.shown=4")


@pytest.fixture(scope="module")
def grounding_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("grounding")
    proc = run_cli("finetune", "-c", str(RECIPE), *SHORT, "--format", "json", "--yes", cwd=cwd, check=True)
    result = last_json(proc.stdout)
    result["run_dir"] = cwd / result["run_dir"]
    return result


@pytest.mark.slow  # one short CLI run (start-up, canvases, 6 steps, evaluation), shared by two tests
def test_run_scores_boxes_beside_the_baseline(grounding_run: dict[str, Any]) -> None:
    metrics = grounding_run["metrics"]["eval"]["grounding"]
    assert metrics["samples"] == 24 and metrics["baseline_size_from"] == "train"
    for key in ("accuracy@0.5", "mean_iou", "baseline_accuracy@0.5", "baseline_mean_iou", "answered"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["evaluated"] == 24 and metrics["grid_accuracy@0.5"] > metrics["baseline_accuracy@0.5"]
    folder: Path = grounding_run["run_dir"] / "eval"
    rows = [json.loads(line) for line in (folder / "grounding.predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(len(row["box"]) == 4 for row in rows)
    assert (folder / "grounding.boxes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((folder / "grounding.json").read_text())["metrics"]
    assert "gallery" not in stored and "predictions" not in stored


@pytest.mark.slow
def test_run_tokenizer_holds_the_location_tokens(grounding_run: dict[str, Any]) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(grounding_run["run_dir"] / "tokenizer"))
    ids = tokenizer(" <box><loc_0><loc_63></box>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<box>", "<loc_0>", "<loc_63>", "</box>"]
    assert "<loc_64>" not in tokenizer.get_vocab() and "loc_0" not in tokenizer.get_vocab()


def test_baseline_is_the_mean_training_box_at_the_centre() -> None:
    assert centre_box((0.25, 0.5)) == (0.375, 0.25, 0.625, 0.75)
    # IoU of [8, 4, 24, 28] (the centre box on a 32-pixel side) with [8, 4, 24, 20] and with [0, 0, 8, 8]:
    # 16*16 / (16*24) and 0, as torchvision.ops.box_iou gives them
    scores = grounding_scores(
        [None, None], [(0.25, 0.125, 0.75, 0.625), (0, 0, 0.25, 0.25)], [32, 32], (0.5, 0.75), 0.5
    )
    assert scores["baseline_accuracy@0.5"] == 0.5 and scores["baseline_mean_iou"] == pytest.approx(1 / 3)
    assert scores["accuracy@0.5"] == 0.0 and scores["mean_iou"] == 0.0  # no box named: a miss


@pytest.mark.slow
def test_debug_recipe_beats_the_centre_box(tmp_path: Path) -> None:
    proc = run_cli("finetune", "-c", str(RECIPE), "--format", "json", "--yes", cwd=tmp_path, check=True)
    metrics = last_json(proc.stdout)["metrics"]["eval"]["grounding"]
    assert metrics["accuracy@0.5"] >= metrics["baseline_accuracy@0.5"] + 0.05
    assert metrics["mean_iou"] >= metrics["baseline_mean_iou"] + 0.05
