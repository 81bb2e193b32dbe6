"""Launch scripts (torchrun, SLURM) and rank agreement on one run directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEBUG_RECIPE, cli_env, last_json, pretrain_json, read_metrics, run_cli

COMMON = ["data.batch_size=32", "train.max_steps=20", "train.log_every_steps=1", "eval=[]"]


def test_slurm_script_matches_the_recipe(tmp_path: Path) -> None:
    proc = run_cli(
        "pretrain",
        "-c",
        "clip/vit-b-16-laion400m",
        "--emit-launch",
        "slurm",
        "--launch-file",
        "job.sh",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    paths = last_json(proc.stdout)
    script = (tmp_path / paths["launch_script"]).read_text()
    directives = dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in script.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    assert (
        directives["nodes"] == "16"
        and directives["ntasks-per-node"] == "8"
        and directives["gpus-per-node"] == "8"
    )
    assert directives["signal"] == "TERM@120" and "#SBATCH --requeue" in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--resume auto" in srun and str((tmp_path / paths["recipe"]).resolve()) in srun
    assert "export VLMFORGE_RUN_DIR=" in script and "slurm-${SLURM_JOB_ID}" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert (tmp_path / "job.recipe.yaml").read_text().startswith("schema_version: 1")
    assert os.access(tmp_path / "job.sh", os.X_OK)
    assert not (tmp_path / "runs").exists()  # writing a script starts nothing


def test_ranks_without_a_shared_run_dir_are_refused(tmp_path: Path) -> None:
    env = cli_env() | {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    env.pop("VLMFORGE_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vlmforge_cli", "pretrain", "-c", str(DEBUG_RECIPE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "VLMFORGE_RUN_DIR" in proc.stderr and "--emit-launch" in proc.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_script_runs_two_ranks_in_one_run_dir(tmp_path: Path) -> None:
    single = pretrain_json(tmp_path, DEBUG_RECIPE, *COMMON, "name=single")
    run_cli(
        "pretrain",
        "-c",
        str(DEBUG_RECIPE),
        *COMMON,
        "train.devices=2",
        "train.strategy.kind=ddp",
        "--emit-launch",
        "torchrun",
        "--launch-file",
        "launch.sh",
        cwd=tmp_path,
        check=True,
    )
    env = cli_env() | {
        "RUN_ID": "t1",
        "MASTER_PORT": str(_free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", "launch.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs" / "clip-tiny").iterdir())
    assert runs == ["torchrun-t1"]  # both ranks wrote into the one directory the script chose
    run_dir = tmp_path / "runs" / "clip-tiny" / "torchrun-t1"
    assert '"world_size": 2' in (run_dir / "manifest.json").read_text()
    single_losses = [r["loss"] for r in read_metrics(tmp_path / single["run_dir"])]
    launched = [r["loss"] for r in read_metrics(run_dir)]
    assert launched == pytest.approx(single_losses, abs=1e-4)  # same global batches as one process

    again = subprocess.run(
        ["bash", "launch.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode != 0 and "completed run" in again.stderr  # never overwrites a finished run
