"""RLHF from the CLI: `vlmforge align` with method reward_model on the tiny LLaVA run (held-out pairwise
accuracy, the saved reward head), then method rloo against that reward model (reward, KL, answer
length and periodic held-out VQA accuracy logged; the held-out reward gain and KL in the result)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.shipped import find_recipe

pytest.importorskip("transformers")
pytest.importorskip("peft")

REWARD_TINY = find_recipe("debug/llava-reward-tiny")
RLOO_TINY = find_recipe("debug/llava-rloo-tiny")


@pytest.mark.slow
def test_reward_model_then_rloo_from_the_cli(llava_run: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    reward = run_cli(
        "align", "-c", str(REWARD_TINY), f"from_run={llava_run}", "--format", "json", cwd=tmp_path
    )
    assert reward.returncode == 0, reward.stderr[-3000:]
    result = last_json(reward.stdout)
    reward_dir = tmp_path / result["run_dir"]
    assert result["status"] == "completed" and result["steps"] == 150
    held_out = result["metrics"]["eval"]["reward"]
    assert held_out["pairs"] == 9 * 360 and 0 <= held_out["image_accuracy"] <= held_out["pairwise_accuracy"]
    with safe_open(str(reward_dir / "model.safetensors"), "pt") as weights:
        assert weights.get_tensor("head.weight").shape == (1, 64)  # the scalar head over the LLM's width
    assert not (reward_dir / "config.json").exists()  # not a transformers LLaVA: the head is extra
    records = [json.loads(line) for line in (reward_dir / "metrics.jsonl").open()]
    assert {"loss", "accuracy", "margin", "chosen_score", "rejected_score"} <= set(records[-1])

    rloo = run_cli(
        "align",
        "-c",
        str(RLOO_TINY),
        f"from_run={llava_run}",
        f"rloo.reward_run={reward_dir}",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert rloo.returncode == 0, rloo.stderr[-3000:]
    result = last_json(rloo.stdout)
    run_dir = tmp_path / result["run_dir"]
    assert result["status"] == "completed" and result["steps"] == 30
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    logged = {r["step"]: r for r in records if "reward" in r}
    assert set(logged) == {5, 10, 15, 20, 25, 30}
    assert all({"reward", "kl", "answer_tokens", "penalised_reward"} <= set(r) for r in logged.values())
    assert {s for s, r in logged.items() if "heldout_vqa_accuracy" in r} == {10, 20, 30}  # every 10 steps
    assert all(1 <= r["answer_tokens"] <= 4 for r in logged.values())  # rloo.max_new_tokens
    gain = result["metrics"]["eval"]["rloo"]
    assert gain["prompts"] == 64 and "accuracy" in result["metrics"]["eval"]["vqa"]
    # both models' greedy answers scored by the same reward model: the RL step raises the score of the
    # held-out answers over the start's, and stays near the start (at lr 1e-3 it did not move: KL ~ 0,
    # and against a reward model that saw one wrong digit per image the score fell)
    assert {"reward_start", "reward_policy", "reward_gain"} <= set(gain)
    assert gain["reward_gain"] == pytest.approx(gain["reward_policy"] - gain["reward_start"])
    assert gain["reward_gain"] > 0 and 0.05 < gain["kl"] < 3

    bad = run_cli(
        "align", "-c", str(RLOO_TINY), f"from_run={llava_run}", f"rloo.reward_run={llava_run}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "not a completed `method: reward_model` align run" in bad.stderr


@pytest.mark.slow
def test_plan_counts_the_7b_reward_model_and_rloo_recipes(tmp_path: Path) -> None:
    for name in ("llava/llava-rlhf-7b-reward", "llava/llava-rlhf-7b-rloo"):
        proc = run_cli("plan", "-c", name, "--gpu", "a100-80gb", "--gpus", "8", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert name.split("/")[1] in proc.stdout and "GB/GPU" in proc.stdout
