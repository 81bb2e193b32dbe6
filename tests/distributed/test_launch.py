"""Launch scripts (torchrun, SLURM) and rank agreement on one run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEBUG_RECIPE, cli_env, free_port, pretrain_json, read_metrics, run_cli

COMMON = ["data.batch_size=32", "train.max_steps=20", "train.log_every_steps=1", "eval=[]"]


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
        "MASTER_PORT": str(free_port()),
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
