"""One batch plan per fit (a pretrain run, a finetune stage, an alignment): worked out once from the
recipe and honoured by the Trainer, the DeepSpeed config and ``actual.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import BatchPlan
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError

LLAVA = find_recipe("debug/llava-tiny")
DPO = find_recipe("debug/llava-dpo-tiny")


def test_batch_plan_follows_deepspeeds_identity() -> None:
    plan = BatchPlan.of(64, 8, 4, None, 2, 1000, "")
    assert plan.accumulate == 2 and plan.global_batch == plan.micro_batch * plan.accumulate * plan.world_size
    assert plan.max_steps == 2 * (1000 // 64)  # epochs of full global batches
    assert BatchPlan.of(64, None, 4, 7, None, None, "").micro_batch == 16  # default: no accumulation
    with pytest.raises(ValueError, match="multiple of"):
        BatchPlan.of(64, 24, 1, 5, None, None, "stages[0].")


def test_finetune_stages_take_train_micro_batch_size_unless_they_set_their_own() -> None:
    recipe = load_recipe("finetune", LLAVA, ["train.micro_batch_size=8", "stages.1.micro_batch_size=16"])
    align, instruct = (recipe.batch_plan(stage) for stage in recipe.stages)
    assert (align.micro_batch, align.accumulate) == (8, 4)  # train.micro_batch_size: 32 = 8 x 4
    assert (instruct.micro_batch, instruct.accumulate) == (16, 2)  # the stage's own wins
    with pytest.raises(UserError, match=r"stages\[0\]\.batch_size 32 must be a multiple of"):
        load_recipe("finetune", LLAVA, ["train.micro_batch_size=12"])


def test_align_recipe_batch_plan_reads_train_micro_batch_size() -> None:
    plan = load_recipe("align", DPO, ["train.micro_batch_size=4"]).batch_plan()
    assert (plan.global_batch, plan.micro_batch, plan.accumulate, plan.max_steps) == (32, 4, 8, 40)


@pytest.mark.parametrize(
    ("verb", "recipe", "expected"),
    [
        ("pretrain", "debug/clip-tiny", {"clip-tiny": (32, 16, 2)}),
        ("finetune", "debug/llava-tiny", {"align": (32, 16, 2), "instruct": (32, 8, 4)}),
        ("align", "debug/llava-dpo-tiny", {"llava-dpo-tiny": (32, 16, 2)}),
    ],
)
def test_emit_deepspeed_config_sizes_each_fit(
    tmp_path: Path, verb: str, recipe: str, expected: dict[str, tuple[int, int, int]]
) -> None:
    overrides = ["train.strategy.kind=deepspeed", "train.micro_batch_size=16"]
    if verb == "finetune":
        overrides.append("stages.1.micro_batch_size=8")
    proc = run_cli(
        verb, "-c", recipe, *overrides, "--emit", "deepspeed-config", "--format", "json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = last_json(proc.stdout)["deepspeed_configs"]
    assert set(written) == set(expected)
    for name, (batch, micro, accumulate) in expected.items():
        config = json.loads((tmp_path / written[name]).read_text())
        assert config["train_batch_size"] == batch
        assert config["train_micro_batch_size_per_gpu"] == micro
        assert config["gradient_accumulation_steps"] == accumulate


def test_emit_deepspeed_config_needs_the_deepspeed_strategy(tmp_path: Path) -> None:
    proc = run_cli("finetune", "-c", str(LLAVA), "--emit", "deepspeed-config", cwd=tmp_path)
    assert proc.returncode == 2 and "train.strategy.kind" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_finetune_micro_batch_changes_the_accumulation_it_trains_with(tmp_path: Path) -> None:
    short = ["stages.0.max_steps=2", "stages.1.max_steps=2", "eval=[]", "train.log_every_steps=1"]
    proc = run_cli(
        "finetune", "-c", str(LLAVA), *short, "train.micro_batch_size=8", "--format", "json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    actual = json.loads((run_dir / "actual.json").read_text())
    for stage in ("align", "instruct"):
        batch = actual["stages"][stage]["batch"]
        assert (batch["global_batch"], batch["micro_batch"], batch["accumulate"]) == (32, 8, 4)
        assert actual["stages"][stage]["steps"] == 2  # optimizer steps, not micro-batches
        logged = [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]
        assert [row["step"] for row in logged if "step" in row] == [1, 2]
