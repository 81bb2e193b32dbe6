"""Launch scripts (torchrun, SLURM) and rank agreement on one run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEBUG_RECIPE, cli_env, last_json, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe


def test_slurm_script_matches_the_recipe(tmp_path: Path) -> None:
    proc = run_cli(
        "pretrain",
        "-c",
        "clip/vit-b-16-laion400m",
        "optim.lr=1e-4",
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
    written = load_recipe("pretrain", tmp_path / "job.recipe.yaml")  # the resolved recipe, nothing lost
    assert written == load_recipe("pretrain", find_recipe("clip/vit-b-16-laion400m"), ["optim.lr=1e-4"])
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
