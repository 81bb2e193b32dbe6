"""Sharded strategies (FSDP, DeepSpeed ZeRO), precision and compile switches, and the planner's layouts.

On CPU: FSDP2 runs with 2 gloo processes through the CLI (Lightning's ModelParallelStrategy), and the
DeepSpeed config vlmforge generates drives raw deepspeed ZeRO-2/3 on 2 CPU ranks under torchrun
(Lightning's DeepSpeedStrategy needs CUDA). The Lightning + CUDA paths are ``gpu`` tests for 1 GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from tests.conftest import DEBUG_RECIPE, REPO, cli_env, last_json, pretrain_json, read_metrics, run_cli
from vlmforge.config.load import dump_recipe, load_recipe
from vlmforge.errors import UserError
from vlmforge.planning.layouts import LAYOUTS
from vlmforge.runs.directory import find_resume_point
from vlmforge.storage import GATHERED_WEIGHTS, prune_checkpoints, replace_path
from vlmforge.training.deepspeed_config import deepspeed_config, for_lightning
from vlmforge.training.trainer import check_runnable


def _deepspeed(recipe: Any) -> dict[str, Any]:
    return deepspeed_config(recipe.train, recipe.batch_plan())


COMMON = [
    "data.batch_size=32",
    "train.max_steps=20",
    "train.log_every_steps=1",
    "train.checkpoint.every_steps=10",
    "eval=[]",
]
FSDP = ["train.devices=2", "train.strategy.kind=fsdp", "train.accelerator=cpu"]
# Same global batches and the exact full-batch gradient (local loss + gather-with-grad) as one process:
# sharded runs differ only by float summation order (see test_distributed.py for the same bound).
LOSS_TOLERANCE = 1e-4


def _recipe(*overrides: str) -> Any:
    return load_recipe("pretrain", DEBUG_RECIPE, list(overrides))


def _losses(run_dir: Path) -> dict[int, float]:
    """{step: loss}; a resumed run appends its steps, the latest record of a step wins."""
    return {record["step"]: record["loss"] for record in read_metrics(run_dir)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


# ----------------------------------------------------------------------------- FSDP2 on 2 CPU ranks
@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("single")
    return cwd / pretrain_json(cwd, DEBUG_RECIPE, *COMMON, "name=single")["run_dir"]


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_two_processes_match_one_then_resume_and_evaluate(single_run: Path, tmp_path: Path) -> None:
    fsdp = pretrain_json(tmp_path, DEBUG_RECIPE, *COMMON, *FSDP, "name=fsdp")
    run_dir = tmp_path / fsdp["run_dir"]
    assert fsdp["status"] == "completed" and fsdp["steps"] == 20
    assert '"world_size": 2' in (run_dir / "manifest.json").read_text()
    single, sharded = _losses(single_run), _losses(run_dir)
    assert sorted(sharded) == list(range(1, 21))
    for step in single:
        assert abs(single[step] - sharded[step]) <= LOSS_TOLERANCE, (
            f"step {step}: {single[step]} vs {sharded[step]}"
        )

    # default state_dict: sharded -> each step checkpoint is a folder; the final weights are one file
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "step-00000010.ckpt" / "meta.pt").is_file()
    assert fsdp["checkpoint"].endswith(GATHERED_WEIGHTS)
    gathered = torch.load(checkpoints / GATHERED_WEIGHTS, weights_only=True)["state_dict"]
    reference = torch.load(single_run / "checkpoints" / "step-00000020.ckpt", weights_only=True)["state_dict"]
    assert gathered.keys() == reference.keys()
    assert max((gathered[k] - reference[k]).abs().max().item() for k in reference) < 1e-4

    # resume from the step-10 folder in a fresh run directory, writing full (one-file) checkpoints now
    resumed_dir = tmp_path / "runs" / "fsdp" / "resumed"
    shutil.copytree(checkpoints / "step-00000010.ckpt", resumed_dir / "checkpoints" / "step-00000010.ckpt")
    shutil.copy(run_dir / "recipe.yaml", resumed_dir / "recipe.yaml")
    resumed = pretrain_json(
        tmp_path,
        DEBUG_RECIPE,
        *COMMON,
        *FSDP,
        "name=fsdp",
        "train.strategy.state_dict=full",
        "--resume",
        str(resumed_dir / "checkpoints" / "step-00000010.ckpt"),
    )
    assert resumed["steps"] == 20 and resumed["resumed_from"].endswith("step-00000010.ckpt")
    continued = _losses(resumed_dir)
    assert sorted(continued) == list(range(11, 21))
    for step in continued:
        assert abs(continued[step] - single[step]) <= LOSS_TOLERANCE, f"resumed step {step}"
    assert (resumed_dir / "checkpoints" / "step-00000020.ckpt").is_file()  # full: one file

    evaluated = last_json(
        run_cli("eval", "--run", str(run_dir), "--format", "json", cwd=tmp_path, check=True).stdout
    )
    assert evaluated["checkpoint"].endswith(GATHERED_WEIGHTS)
    assert evaluated["metrics"]["zeroshot"]["top1"] > 0.1  # digits have 10 classes: above chance


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_runs_objectives_that_call_model_methods_directly(tmp_path: Path) -> None:
    """FLAVA's objective calls encode_visible, the MAE decoder, mlm_logits, encode_image/encode_text and
    reads logit_scale itself instead of calling the model's forward: it runs as the sharded root's forward."""
    args = [*COMMON, *FSDP, "train.max_steps=10", "train.log_every_steps=1", "train.checkpoint.every_steps=5"]
    result = pretrain_json(tmp_path, "debug/flava-tiny", *args)
    run_dir = tmp_path / result["run_dir"]
    losses = _losses(run_dir)
    assert result["status"] == "completed" and sorted(losses) == list(range(1, 11))
    assert losses[10] < losses[1]
    terms = read_metrics(run_dir)[-1]
    assert {"mim", "mlm", "contrastive"} <= terms.keys()
    assert (run_dir / "checkpoints" / GATHERED_WEIGHTS).is_file()


# ------------------------------------------------------------------- raw DeepSpeed on 2 CPU ranks
@pytest.mark.distributed
@pytest.mark.slow
def test_generated_deepspeed_config_trains_zero2_and_zero3_on_two_cpu_ranks(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    overrides = [
        "train.devices=2",
        "train.max_steps=12",
        "train.strategy.kind=deepspeed",
        "train.strategy.stage=3",
        # partition even tiny parameters, so that ZeRO-3 visibly holds none of them whole between steps
        "train.strategy.overrides.zero_optimization.stage3_param_persistence_threshold=0",
    ]
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(dump_recipe(_recipe(*overrides)))
    emitted = run_cli(
        "pretrain",
        "-c",
        str(recipe_file),
        "--emit",
        "deepspeed-config",
        "--launch-file",
        "zero3.json",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    assert last_json(emitted.stdout)["deepspeed_config"] == "zero3.json"
    zero2 = _deepspeed(_recipe(*overrides[:3], "train.strategy.stage=2"))
    (tmp_path / "zero2.json").write_text(json.dumps(zero2))

    env = cli_env() | {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    command += [f"--master-port={_free_port()}", str(REPO / "tests" / "deepspeed_worker.py")]
    command += [str(recipe_file), str(tmp_path), "zero2.json", "zero3.json"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for stage in (2, 3):
        ranks = [json.loads((tmp_path / f"zero{stage}-rank{r}.json").read_text()) for r in (0, 1)]
        report = ranks[0]
        assert report["stage"] == stage and report["world"] == 2 and report["accelerator"] == "cpu"
        losses = report["losses"]
        assert len(losses) == 12 and ranks[1]["losses"] == losses
        assert sum(losses[-3:]) < sum(losses[:3]), f"ZeRO-{stage} loss did not fall: {losses}"
        total = report["total_params"]
        partitions = [r["local_partition"] for r in ranks]
        assert all(p < 0.6 * total for p in partitions) and sum(partitions) >= total  # split in two
        # ZeRO-2 keeps whole weights on every rank; ZeRO-3 keeps none of them between steps
        assert report["resident_params"] == (total if stage == 2 else 0)
        assert report["gathered_weights_max_error"] == 0.0  # vlmforge's reader of the ZeRO folder
        # the logit-scale clamp reaches the fp32 copy DeepSpeed optimises, not only the working copy
        assert report["logit_scale"] <= report["logit_scale_cap"] + 1e-6


# ------------------------------------------------------------------------------------ torch.compile
@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(single_run: Path, tmp_path: Path) -> None:
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on CPU (none found)")
    compiled = pretrain_json(tmp_path, DEBUG_RECIPE, *COMMON, "name=compiled", "train.compile=true")
    eager, fused = _losses(single_run), _losses(tmp_path / compiled["run_dir"])
    assert sorted(fused) == sorted(eager)
    for step in eager:  # fused kernels reorder float sums: same trajectory, not bit-identical
        assert abs(eager[step] - fused[step]) <= 1e-3, (
            f"step {step}: eager {eager[step]} vs compiled {fused[step]}"
        )
    state = torch.load(tmp_path / compiled["checkpoint"], weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)  # compiled in place: checkpoints keep eager names


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
    assert result.cheapest is not None
    row = result.rows[result.cheapest]
    line = next(text for text in buffer.getvalue().splitlines() if text.startswith("cheapest"))
    assert line.endswith(f"vlmforge pretrain -c RECIPE {row.recipe_overrides}")
    picked = _recipe(*row.recipe_overrides.split(), f"data.batch_size={recipe.data.batch_size}")
    assert picked.world_size == row.count and picked.batch_plan().accumulate == row.accumulate


# ------------------------------------------------------------------------- Lightning + CUDA (1 GPU)
GPU_RUN = [
    "train.accelerator=gpu",
    "train.devices=1",
    "data.batch_size=32",
    "train.max_steps=20",
    "train.log_every_steps=1",
    "eval=[]",
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "strategy",
    [
        ["train.strategy.kind=fsdp", "train.precision=bf16-mixed"],
        ["train.strategy.kind=fsdp", "train.strategy.state_dict=full", "train.activation_checkpointing=true"],
        ["train.strategy.kind=deepspeed", "train.strategy.stage=2", "train.precision=bf16-mixed"],
        ["train.strategy.kind=deepspeed", "train.strategy.stage=3", "train.precision=16-mixed"],
        ["train.strategy.kind=auto", "train.precision=16-mixed", "train.compile=true"],
    ],
    ids=["fsdp-bf16", "fsdp-full-ckpt", "zero2-bf16", "zero3-fp16", "fp16-compile"],
)
def test_lightning_cuda_strategies_train_and_evaluate(strategy: list[str], tmp_path: Path) -> None:
    result = pretrain_json(tmp_path, DEBUG_RECIPE, *GPU_RUN, *strategy, "train.checkpoint.every_steps=10")
    run_dir = tmp_path / result["run_dir"]
    losses = _losses(run_dir)
    assert result["status"] == "completed" and sorted(losses) == list(range(1, 21))
    assert losses[20] < losses[1]
    evaluated = last_json(
        run_cli("eval", "--run", str(run_dir), "--format", "json", cwd=tmp_path, check=True).stdout
    )
    assert evaluated["metrics"]["zeroshot"]["top1"] > 0.1
    resumed = pretrain_json(
        tmp_path,
        DEBUG_RECIPE,
        *GPU_RUN,
        *strategy,
        "train.max_steps=25",
        "--resume",
        str(run_dir),
    )
    assert resumed["steps"] == 25 and resumed["resumed_from"] is not None
