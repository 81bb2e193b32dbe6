"""`vlmforge sweep` through the real CLI: plans before anything runs, bad grids refused up front, the
SLURM array, a 4-child sweep stopped by SIGTERM and resumed; `--emit-launch` for finetune and align."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import DEBUG_RECIPE, last_json, run_cli, start_cli
from vlmforge.config.load import load_recipe

TINY = "debug/clip-tiny"  # shipped; planned on an a100-80gb, a fraction of a cent per run


def test_plan_only_prints_each_child_and_the_total(tmp_path: Path) -> None:
    grid = ["--grid", "optim.lr=[1e-4,3e-4]", "--grid", "train.max_steps=[1000,2000]", "--plan-only"]
    planned = last_json(
        run_cli("sweep", "-c", TINY, *grid, "--format", "json", cwd=tmp_path, check=True).stdout
    )
    children = planned["children"]
    assert [c["overrides"] for c in children] == [
        ["optim.lr=1e-4", "train.max_steps=1000"],
        ["optim.lr=1e-4", "train.max_steps=2000"],
        ["optim.lr=3e-4", "train.max_steps=1000"],
        ["optim.lr=3e-4", "train.max_steps=2000"],
    ]
    flops = [c["plan"]["total_flops"] for c in children]
    assert flops[1] == pytest.approx(2 * flops[0]) and flops[2] == pytest.approx(flops[0])
    assert planned["total_usd"] == pytest.approx(sum(c["plan"]["usd"] for c in children))
    assert planned["total_usd"] > 0 and all(c["status"] == "pending" for c in children)

    drawn = run_cli(
        "sweep", "-c", TINY, *grid, "--random", "3", "--seed", "1", cwd=tmp_path, check=True
    ).stdout
    assert all(f"clip-tiny-00{i}" in drawn for i in range(3)) and "clip-tiny-003" not in drawn
    assert "total: 3 runs, about " in drawn and "optim.lr=" in drawn
    assert not (tmp_path / "runs").exists()  # a plan writes nothing


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (
            "optim.lr=[1e-3,fast]",
            ["sweep children 2, 3 (2 of them; child 2: optim.lr=fast seed=0)", "optim.lr", "'fast'"],
        ),
        ("optim.lrate=[1,2]", ["lrate", "lr"]),
    ],
)
def test_a_bad_grid_fails_before_the_first_child(tmp_path: Path, flag: str, named: list[str]) -> None:
    proc = run_cli("sweep", "-c", str(DEBUG_RECIPE), "--grid", flag, "--grid", "seed=[0,1]", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert all(word in proc.stderr for word in named), proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []  # nothing written


def test_emit_slurm_asks_above_the_limit_then_writes_an_array(tmp_path: Path) -> None:
    args = ["sweep", "-c", TINY, "--grid", "optim.lr=[1e-4,3e-4]", "--emit-launch", "slurm", "--out", "sw"]
    refused = run_cli(*args, "plan.confirm_above_usd=0", cwd=tmp_path)  # any cost is above it
    assert (
        refused.returncode == 2 and "plan.confirm_above_usd" in refused.stderr and "--yes" in refused.stderr
    )
    assert not (tmp_path / "sw").exists()

    written = last_json(run_cli(*args, "--format", "json", cwd=tmp_path, check=True).stdout)
    script = Path(written["launch_script"]).read_text()
    assert "#SBATCH --array=0-1\n" in script and "#SBATCH --nodes=1\n" in script
    assert "#SBATCH --ntasks-per-node=1\n" in script and "#SBATCH --signal=TERM@120\n" in script
    assert "--gpus-per-node" not in script  # the recipe trains on CPU
    assert 'srun vlmforge pretrain -c "$RECIPE" --resume auto --yes' in script
    children = sorted((tmp_path / "sw" / "children").glob("*.yaml"))
    assert [p.name for p in children] == ["clip-tiny-000.yaml", "clip-tiny-001.yaml"]
    assert all(str(p) in script for p in children)
    recipes = [load_recipe("pretrain", p) for p in children]
    assert [r.optim.lr for r in recipes] == [1e-4, 3e-4]
    assert all(r.output_dir == (tmp_path / "sw").resolve() for r in recipes)
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["children"][1]["status"] == "pending"
    assert not list((tmp_path / "sw").glob("clip-tiny-00*/"))  # writing the script trains nothing


def test_finetune_and_align_emit_launch_scripts(tmp_path: Path) -> None:
    for verb, recipe, kind in (
        ("finetune", "llava/llava-1.5-7b", "torchrun"),
        ("align", "llava/llava-1.5-7b-dpo", "slurm"),
    ):
        proc = run_cli(
            verb, "-c", recipe, "--emit-launch", kind, "--launch-file", f"{verb}.sh", cwd=tmp_path, check=True
        )
        script = (tmp_path / f"{verb}.sh").read_text()
        assert f"{verb} -c {(tmp_path / f'{verb}.recipe.yaml').resolve()} --resume auto --yes" in script, (
            proc.stderr
        )
        assert load_recipe(verb, tmp_path / f"{verb}.recipe.yaml").name in script
    assert "torchrun --nnodes=" in (tmp_path / "finetune.sh").read_text()
    assert "#SBATCH --requeue" in (tmp_path / "align.sh").read_text()
    assert not (tmp_path / "runs").exists()


def _wait_for_checkpoint(folder: Path, proc) -> None:
    deadline = time.monotonic() + 600
    while not list(folder.glob("*/checkpoints/step-*.ckpt")):
        assert proc.poll() is None, f"sweep ended early:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the second child's checkpoint"
        time.sleep(0.05)


@pytest.mark.slow
def test_four_child_sweep_stopped_by_sigterm_resumes_where_it_stopped(tmp_path: Path) -> None:
    args = [
        "sweep", "-c", str(DEBUG_RECIPE), "--grid", "optim.lr=[1e-3,2e-3]", "--grid", "seed=[0,1]",
        "train.max_steps=40", "train.checkpoint.every_steps=5", "train.log_every_steps=5", "eval=[]",
        "--out", "sw",
    ]  # fmt: skip
    sweep_dir = tmp_path / "sw"
    proc = start_cli(*args, cwd=tmp_path)
    _wait_for_checkpoint(sweep_dir / "clip-tiny-001", proc)
    proc.send_signal(signal.SIGTERM)  # passed on to the running child, which checkpoints and stops
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [c["status"] for c in record["children"]] == ["completed", "preempted", "pending", "pending"]
    first = sweep_dir / record["children"][0]["run_dir"] / "result.json"
    first_written = first.stat().st_mtime_ns

    resumed = run_cli(*args, "--format", "json", cwd=tmp_path, check=True)
    result = last_json(resumed.stdout)
    assert "sweep child 0 (clip-tiny-000): completed earlier, skipped" in resumed.stderr
    assert (
        "sweep child 1 (clip-tiny-001) optim.lr=1e-3 seed=1: resuming from clip-tiny-001/" in resumed.stderr
    )
    assert first.stat().st_mtime_ns == first_written  # the finished child was not trained again
    assert [c["status"] for c in result["children"]] == ["completed"] * 4
    runs = {c["name"]: list((sweep_dir / c["name"]).iterdir()) for c in result["children"]}
    assert all(len(dirs) == 1 for dirs in runs.values())  # the stopped child went on in its own run dir
    second = json.loads((sweep_dir / result["children"][1]["run_dir"] / "result.json").read_text())
    assert second["resumed_from"] is not None and second["steps"] == 40
    lrs = [
        load_recipe("pretrain", sweep_dir / "children" / f"clip-tiny-00{i}.yaml").optim.lr for i in range(4)
    ]
    assert lrs == [1e-3, 1e-3, 2e-3, 2e-3]
    csv_lines = (sweep_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("index,name,status,optim.lr,seed,plan_usd,plan_hours,train.loss")
    assert len(csv_lines) == 5 and (sweep_dir / "results.png").stat().st_size > 0
    assert result["results"]["metric"] == "train.loss"
