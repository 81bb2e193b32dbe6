"""One batch plan per fit (a pretrain run, a finetune stage, an alignment): worked out once from the
recipe and honoured by the Trainer, the DeepSpeed config and ``actual.json``."""

from __future__ import annotations

import pytest

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
