"""Sharded strategies (FSDP, DeepSpeed ZeRO), precision and compile switches, and the planner's layouts.

On CPU: FSDP2 runs with 2 gloo processes through the CLI (Lightning's ModelParallelStrategy), and the
DeepSpeed config vlmforge generates drives raw deepspeed ZeRO-2/3 on 2 CPU ranks under torchrun
(Lightning's DeepSpeedStrategy needs CUDA). The Lightning + CUDA paths are ``gpu`` tests for 1 GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from tests.conftest import DEBUG_RECIPE
from vlmforge.config.load import dump_recipe, load_recipe
from vlmforge.errors import UserError
from vlmforge.planning.layouts import LAYOUTS
from vlmforge.runs.directory import find_resume_point
from vlmforge.storage import prune_checkpoints, replace_path
from vlmforge.training.deepspeed_config import deepspeed_config, for_lightning
from vlmforge.training.requirements import check_runnable


def _deepspeed(recipe: Any) -> dict[str, Any]:
    return deepspeed_config(recipe.train, recipe.batch_plan())


FSDP = ["train.devices=2", "train.strategy.kind=fsdp", "train.accelerator=cpu"]


def _recipe(*overrides: str) -> Any:
    return load_recipe("pretrain", DEBUG_RECIPE, list(overrides))


# ------------------------------------------------------------------------------- DeepSpeed config
def test_deepspeed_config_follows_the_recipe() -> None:
    recipe = _recipe(
        "train.devices=4",
        "data.batch_size=64",
        "train.micro_batch_size=8",
        "train.grad_clip_norm=1.5",
        "train.precision=bf16-mixed",
        "train.strategy.kind=deepspeed",
        "train.strategy.stage=3",
        "train.strategy.offload_optimizer=true",
        "train.strategy.offload_params=true",
        "train.strategy.overrides={zero_optimization: {overlap_comm: false}, steps_per_print: 7}",
    )
    config = _deepspeed(recipe)
    assert config["train_batch_size"] == 64
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 2  # 64 = 8 x 2 x 4
    assert config["gradient_clipping"] == 1.5
    assert config["bf16"] == {"enabled": True} and "fp16" not in config
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"
    assert zero["overlap_comm"] is False and zero["contiguous_gradients"] is True  # merged, not replaced
    assert config["steps_per_print"] == 7
    assert "optimizer" not in config  # the training module's AdamW, with its weight-decay groups
    assert "gradient_accumulation_steps" not in for_lightning(config)  # Lightning sets it from the Trainer


def test_deepspeed_config_precision_and_errors() -> None:
    fp16 = _deepspeed(
        _recipe("train.accelerator=gpu", "train.precision=16-mixed", "train.strategy.kind=deepspeed")
    )
    assert fp16["fp16"]["enabled"] is True and fp16["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    fp32 = _deepspeed(_recipe("train.strategy.kind=deepspeed"))
    assert "fp16" not in fp32 and "bf16" not in fp32 and fp32["zero_optimization"]["stage"] == 2
    assert fp32["gradient_clipping"] == 0.0  # the debug recipe turns clipping off
    with pytest.raises(UserError, match=r"train\.strategy\.kind is 'auto'"):
        _deepspeed(_recipe())
    with pytest.raises(UserError, match="offload_params needs stage: 3"):
        _recipe("train.strategy.kind=deepspeed", "train.strategy.offload_params=true")


def test_strategies_that_cannot_run_on_cpu_are_refused_before_starting() -> None:
    with pytest.raises(UserError, match="16-mixed") as excinfo:
        _recipe("train.precision=16-mixed")  # accelerator: cpu in the recipe: refused at validation
    assert "train.precision" in excinfo.value.message
    with pytest.raises(UserError, match="CUDA GPUs only") as excinfo:
        check_runnable(_recipe("train.strategy.kind=deepspeed"))
    assert "--emit deepspeed-config" in (excinfo.value.hint or "")
    with pytest.raises(UserError, match="cpu_offload"):
        check_runnable(_recipe("train.strategy.kind=fsdp", "train.strategy.cpu_offload=true"))
    check_runnable(_recipe("train.strategy.kind=fsdp", "train.precision=bf16-mixed"))  # runs on CPU
    if not torch.cuda.is_available():  # accelerator auto resolves to this machine's CPU
        with pytest.raises(UserError, match="16-mixed"):
            check_runnable(_recipe("train.accelerator=auto", "train.precision=16-mixed"))


def test_scalar_parameters_train_as_shape_one_and_load_into_a_fresh_model(tmp_path: Path) -> None:
    from vlmforge.models.contrastive import build_model, load_checkpoint_weights
    from vlmforge.training.sharding import promote_scalar_parameters

    cfg = _recipe("model.kind=siglip").model
    trained = build_model(cfg, vocab_size=50)
    assert trained.logit_scale.ndim == 0 and trained.logit_bias.ndim == 0  # as open_clip builds them
    promote_scalar_parameters(trained)
    assert trained.logit_scale.shape == trained.logit_bias.shape == (1,)
    assert all(p.ndim >= 1 for p in trained.parameters())
    with torch.no_grad():
        trained.logit_scale.fill_(1.25)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "w.ckpt"
    )
    fresh = build_model(cfg, vocab_size=50)
    load_checkpoint_weights(fresh, tmp_path / "w.ckpt")
    assert fresh.logit_scale.ndim == 0 and fresh.logit_scale.item() == 1.25


# ------------------------------------------------------------------- checkpoint files and folders
def test_checkpoint_folders_are_replaced_pruned_and_resumable(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (10, 20, 30):
        tmp = checkpoints / f".step-{step:08d}.ckpt.tmp"
        tmp.mkdir()
        torch.save({"global_step": step}, tmp / "meta.pt")
        replace_path(tmp, checkpoints / f"step-{step:08d}.ckpt")
    newer = checkpoints / ".step-00000030.ckpt.tmp"  # step 30 saved again, as a file this time
    torch.save({"global_step": 30}, newer)
    replace_path(newer, checkpoints / "step-00000030.ckpt")
    assert (checkpoints / "step-00000030.ckpt").is_file()
    prune_checkpoints(checkpoints, keep_last=2)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000020.ckpt", "step-00000030.ckpt"]

    folder = checkpoints / "step-00000020.ckpt"
    point = find_resume_point(tmp_path, "unused", str(folder))
    assert point is not None and point.checkpoint == folder and point.run_dir == tmp_path / "run"
    (folder / "meta.pt").write_bytes(b"damaged")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        find_resume_point(tmp_path, "unused", str(folder))


@pytest.mark.parametrize(
    ("written_by", "resumed_with", "refused"),
    [
        (["train.strategy.kind=ddp", "train.devices=2"], ["train.strategy.kind=auto"], None),
        (["train.strategy.kind=ddp"], ["train.strategy.kind=fsdp"], "written by ddp"),
        (["train.strategy.kind=fsdp"], ["train.strategy.kind=fsdp", "train.strategy.state_dict=full"], None),
        (["train.strategy.kind=deepspeed", "train.devices=2"], ["train.strategy.kind=fsdp"], "by deepspeed"),
        (["train.strategy.kind=deepspeed", "train.devices=2"], ["train.strategy.kind=deepspeed"], "over 2"),
    ],
)
def test_resuming_with_a_strategy_that_cannot_read_the_checkpoints_is_refused(
    written_by: list[str], resumed_with: list[str], refused: str | None, tmp_path: Path
) -> None:
    from vlmforge.runs.directory import prepare_run

    run_dir = tmp_path / "runs" / "clip-tiny" / "earlier"
    (run_dir / "checkpoints").mkdir(parents=True)
    output_dir = f"output_dir={tmp_path / 'runs'}"
    (run_dir / "recipe.yaml").write_text(dump_recipe(_recipe(*written_by, output_dir)))
    torch.save({"global_step": 10}, run_dir / "checkpoints" / "step-00000010.ckpt")
    recipe = _recipe(*resumed_with, output_dir)
    with mock.patch.dict(os.environ):  # prepare_run exports the run directory for the ranks it would start
        if refused is None:
            assert prepare_run(recipe, str(run_dir))[0] == run_dir
            return
        with pytest.raises(UserError, match=refused):
            prepare_run(recipe, str(run_dir))


# ------------------------------------------------------------------------------------- the planner
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.label)
def test_every_planned_layout_is_a_valid_recipe(layout: Any) -> None:
    overrides = layout.recipe_overrides(16, 4).split()
    recipe = _recipe("data.batch_size=128", *overrides)
    kind = {"ddp": "ddp", "zero2": "deepspeed", "zero3": "deepspeed"}.get(layout.strategy, "fsdp")
    assert recipe.train.strategy.kind == kind
    assert (
        recipe.world_size == 16
        and recipe.batch_plan().micro_batch == 4
        and recipe.batch_plan().accumulate == 2
    )
    assert recipe.train.activation_checkpointing == layout.checkpointing
    if kind == "deepspeed":
        assert recipe.train.strategy.stage == int(layout.strategy[-1])
        assert recipe.train.strategy.offload_optimizer == layout.offload
    if layout.strategy == "fsdp-hybrid":
        assert recipe.train.strategy.sharding == "hybrid" and recipe.train.num_nodes == 2


def test_plan_prints_the_recipe_overrides_of_its_pick() -> None:
    import io

    from rich.console import Console

    from vlmforge.config.shipped import resolve_recipe_path
    from vlmforge.verbs import plan
    from vlmforge_cli.render import plan_table

    recipe = load_recipe("pretrain", resolve_recipe_path("clip/vit-b-16-laion400m"), [])
    result = plan.run(recipe, ["a100-40gb"], [8, 64])
    buffer = io.StringIO()
    plan_table(Console(file=buffer, width=300), result)
    assert result.pick is not None
    row = result.rows[result.pick]
    line = next(text for text in buffer.getvalue().splitlines() if text.startswith("pick"))
    assert line.endswith(f"vlmforge pretrain -c RECIPE {row.recipe_overrides}")
    picked = _recipe(*row.recipe_overrides.split(), f"data.batch_size={recipe.data.batch_size}")
    assert picked.world_size == row.count and picked.batch_plan().accumulate == row.accumulate


def test_plan_of_a_staged_recipe_prints_stage_micro_batches_that_load() -> None:
    import io

    from rich.console import Console

    from vlmforge.config.shipped import find_recipe
    from vlmforge.verbs import plan
    from vlmforge_cli.render import plan_table

    recipe = load_recipe("finetune", find_recipe("debug/llava-tiny"))
    result = plan.run(recipe, ["a100-80gb"], [1, 2])
    buffer = io.StringIO()
    plan_table(Console(file=buffer, width=300), result)
    line = next(text for text in buffer.getvalue().splitlines() if text.startswith("pick"))
    assert "vlmforge finetune -c RECIPE" in line
    assert result.pick is not None
    row = result.rows[result.pick]
    picked = load_recipe("finetune", find_recipe("debug/llava-tiny"), row.recipe_overrides.split())
    for stage, planned in zip(picked.stages, row.stages, strict=True):
        batch = picked.batch_plan(stage)
        assert (batch.micro_batch, batch.accumulate) == (planned["micro_batch"], planned["accumulate"])


def test_gpu_recipe_on_a_machine_without_one_is_refused_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmforge.planning.fits import device_memory
    from vlmforge.training import requirements

    monkeypatch.setattr(requirements, "_cuda_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"train\.accelerator gpu: this machine has no CUDA GPU") as excinfo:
        check_runnable(_recipe("train.accelerator=gpu"))
    assert "train.accelerator=cpu" in (excinfo.value.hint or "")
    assert device_memory(on_cpu=False, processes_here=1) is None  # the memory check skips, not crashes
