"""Sharded strategies (FSDP, DeepSpeed ZeRO), precision and compile switches, and the planner's layouts.

On CPU: FSDP2 runs with 2 gloo processes through the CLI (Lightning's ModelParallelStrategy), and the
DeepSpeed config vlmforge generates drives raw deepspeed ZeRO-2/3 on 2 CPU ranks under torchrun
(Lightning's DeepSpeedStrategy needs CUDA). The Lightning + CUDA paths are ``gpu`` tests for 1 GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import (
    DEBUG_RECIPE,
    FSDP,
    REPO,
    SHORT_RUN,
    cli_env,
    free_port,
    last_json,
    pretrain_json,
    read_metrics,
    run_cli,
    step_losses,
)
from vlmforge.config.load import dump_recipe, load_recipe
from vlmforge.storage import GATHERED_WEIGHTS
from vlmforge.training.deepspeed_config import deepspeed_config


def _deepspeed(recipe: Any) -> dict[str, Any]:
    return deepspeed_config(recipe.train, recipe.batch_plan())


# Same global batches and the exact full-batch gradient (local loss + gather-with-grad) as one process:
# sharded runs differ only by float summation order (see test_distributed.py for the same bound).
LOSS_TOLERANCE = 1e-4


def _recipe(*overrides: str) -> Any:
    return load_recipe("pretrain", DEBUG_RECIPE, list(overrides))


# ----------------------------------------------------------------------------- FSDP2 on 2 CPU ranks


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_two_processes_match_one_then_resume_and_evaluate(single_run: Path, tmp_path: Path) -> None:
    fsdp = pretrain_json(tmp_path, DEBUG_RECIPE, *SHORT_RUN, *FSDP, "name=fsdp")
    run_dir = tmp_path / fsdp["run_dir"]
    assert fsdp["status"] == "completed" and fsdp["steps"] == 20
    assert '"world_size": 2' in (run_dir / "manifest.json").read_text()
    single, sharded = step_losses(single_run), step_losses(run_dir)
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
        *SHORT_RUN,
        *FSDP,
        "name=fsdp",
        "train.strategy.state_dict=full",
        "--resume",
        str(resumed_dir / "checkpoints" / "step-00000010.ckpt"),
    )
    assert resumed["steps"] == 20 and resumed["resumed_from"].endswith("step-00000010.ckpt")
    continued = step_losses(resumed_dir)
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
    args = [
        *SHORT_RUN,
        *FSDP,
        "train.max_steps=10",
        "train.log_every_steps=1",
        "train.checkpoint.every_steps=5",
    ]
    result = pretrain_json(tmp_path, "debug/flava-tiny", *args)
    run_dir = tmp_path / result["run_dir"]
    losses = step_losses(run_dir)
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
    command += [f"--master-port={free_port()}", str(REPO / "tests" / "deepspeed_worker.py")]
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
