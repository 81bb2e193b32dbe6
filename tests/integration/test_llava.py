"""LLaVA family: conversation data and answer-only labels, freezing per stage, LoRA, pretrained towers,
the 7B recipe on the planner, and `vlmforge finetune` + `vlmforge eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe

pytest.importorskip("transformers")
pytest.importorskip("peft")

TINY = find_recipe("debug/llava-tiny")


def _recipe(*overrides: str) -> FinetuneRecipe:
    return cast(FinetuneRecipe, load_recipe("finetune", TINY, list(overrides)))


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_finetune_then_eval_from_the_cli(tmp_path: Path) -> None:
    short = ("stages.1.max_steps=60", "train.log_every_steps=5")  # the recipe's 200 steps: see README
    proc = run_cli("finetune", "-c", str(TINY), *short, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plan:" in proc.stderr  # the plan is shown before training starts
    result = last_json(proc.stdout)
    run_dir = tmp_path / result["run_dir"]
    assert result["status"] == "completed" and result["steps"] == 100
    for stage in ("align", "instruct"):
        losses = [json.loads(line)["loss"] for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]
        assert losses[-1] < losses[0], f"stage {stage}: loss did not fall: {losses}"
        assert (run_dir / "stages" / stage / "model.safetensors").is_file()
    accuracy = result["metrics"]["eval"]["vqa"]["accuracy"]
    assert accuracy > 0.1  # chance is 0.1 (ten digits); seed 0 with 60 stage-2 steps reaches 0.19 here

    evaluated = last_json(
        run_cli("eval", "--run", str(run_dir), "--format", "json", cwd=tmp_path, check=True).stdout
    )
    assert evaluated["metrics"]["vqa"]["accuracy"] == pytest.approx(accuracy)  # greedy: deterministic
    assert (run_dir / "eval" / "vqa.json").is_file()

    # a second stage stopped after its last checkpoint: --resume auto skips the finished first stage
    # and resumes the second from that checkpoint
    for name in ("result.json", "stages/instruct/result.json", "stages/instruct/model.safetensors"):
        (run_dir / name).unlink()
    resumed = run_cli(
        "finetune", "-c", str(TINY), *short, "--resume", "auto", "--format", "json", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage align: finished earlier, skipped" in resumed.stderr
    assert "stage instruct: projector+llm, 60 steps from" in resumed.stderr
    assert (run_dir / "stages" / "instruct" / "model.safetensors").is_file()
    again = last_json(resumed.stdout)
    assert again["run_dir"] == result["run_dir"] and again["status"] == "completed"

    planned = last_json(run_cli("plan", "-c", str(TINY), "--format", "json", cwd=tmp_path, check=True).stdout)
    assert [stage["name"] for stage in planned["stages"]] == ["align", "instruct"]
    assert planned["family"] == "llava" and planned["rows"]


def test_calibration_times_the_costliest_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmforge.planning.calibrate import calibrate
    from vlmforge.planning.phases import recipe_model_costs

    monkeypatch.setenv("VLMFORGE_CACHE", str(tmp_path))
    calibration = calibrate(_recipe("model.llm.vocab_size=64"), micro_batch=4, steps=2)
    costs = recipe_model_costs(_recipe("model.llm.vocab_size=64"))
    assert calibration.family == "llava" and calibration.median_step_seconds > 0
    assert calibration.flops_per_step == pytest.approx(4 * max(c.flops_per_sample for c in costs))
