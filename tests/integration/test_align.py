"""`vlmforge align`: the DPO / IPO loss, preference data (errors, drops, collation), the align recipe, and
finetune -> align end to end from the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.shipped import find_recipe

pytest.importorskip("transformers")
pytest.importorskip("peft")

DPO_TINY = find_recipe("debug/llava-dpo-tiny")
LLAVA_TINY = find_recipe("debug/llava-tiny")


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_finetune_then_align_from_the_cli(tmp_path: Path) -> None:
    short = ("stages.0.max_steps=10", "stages.1.max_steps=40", "eval=[]")
    run_cli("finetune", "-c", str(LLAVA_TINY), *short, "--format", "json", cwd=tmp_path, check=True)

    proc = run_cli("align", "-c", str(DPO_TINY), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plan:" in proc.stderr  # the plan is shown before training starts
    result = last_json(proc.stdout)
    run_dir = tmp_path / result["run_dir"]
    assert result["status"] == "completed" and result["steps"] == 40
    assert result["metrics"]["data"]["kept"] == 1797 and not result["metrics"]["data"]["dropped"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert {"reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"} <= set(records[-1])
    # the policy starts as the reference: loss log 2, every reward 0 (no pair preferred); training
    # moves the held-out pairs' loss below log 2 and makes the chosen answers' rewards the higher ones
    held_out = result["metrics"]["eval"]["preference"]
    assert held_out["dpo_loss"] < math.log(2) - 0.02
    assert held_out["reward_accuracy"] > 0.5 and held_out["reward_margin"] > 0
    assert held_out["policy_prefers_chosen"] > held_out["reference_prefers_chosen"]
    pairs = [json.loads(line) for line in (run_dir / "eval" / "preference.predictions.jsonl").open()]
    margins = [pair["chosen_reward"] - pair["rejected_reward"] for pair in pairs]
    assert sum(margins) / len(margins) == pytest.approx(held_out["reward_margin"], abs=1e-5)
    assert sum(m > 0 for m in margins) / len(margins) == pytest.approx(held_out["reward_accuracy"])
    assert "predictions" not in held_out
    for name in (
        "result.json",
        "actual.json",
        "plan.json",
        "model.safetensors",
        "eval/preference.json",
        "eval/vqa.json",
    ):
        assert (run_dir / name).is_file(), name

    # vlmforge eval on the align run: the same policy, reference and held-out pairs give the same numbers
    evaluated = run_cli(
        "eval", "--run", str(run_dir), "tasks=[{kind: preference}]", "--format", "json", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again_held_out = last_json(evaluated.stdout)["metrics"]["preference"]
    assert again_held_out["reward_accuracy"] == held_out["reward_accuracy"]
    assert again_held_out["dpo_loss"] == pytest.approx(held_out["dpo_loss"], abs=1e-5)

    # --resume auto on a finished run leaves it as it is (a new run starts, as for every verb)
    before = {name: (run_dir / name).read_bytes() for name in ("result.json", "model.safetensors")}
    again = run_cli(
        "align",
        "-c",
        str(DPO_TINY),
        "max_steps=2",
        "eval=[]",
        "--resume",
        "auto",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert last_json(again.stdout)["run_dir"] != result["run_dir"]
    assert before == {name: (run_dir / name).read_bytes() for name in before}

    bad = run_cli("align", "-c", str(DPO_TINY), "from_run=nowhere/llava", cwd=tmp_path)
    assert bad.returncode == 2 and "nowhere/llava" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_plan_prints_a_table_for_the_7b_dpo_recipe(tmp_path: Path) -> None:
    proc = run_cli("plan", "-c", "llava/llava-1.5-7b-dpo", "--gpu", "a100-80gb", "--gpus", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llava-1.5-7b-dpo" in proc.stdout and "a100-80gb" in proc.stdout and "GB/GPU" in proc.stdout
