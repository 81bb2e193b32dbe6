"""Multi-process launches: which rank this process is, and ready-to-run torchrun / SLURM scripts.

Three ways a training run gets several processes:
- Lightning's own launcher (``vlmforge pretrain`` with ``train.devices > 1`` on one machine): rank 0
  creates the run directory and passes it to the processes it starts through ``VLMFORGE_RUN_DIR``.
- ``torchrun`` or ``srun`` start every process themselves: the launch script exports one
  ``VLMFORGE_RUN_DIR`` for all ranks, so they agree on the run directory without talking first.
- A single process: nothing to agree on.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from vlmforge.config.load import dump_recipe
from vlmforge.config.schema import AlignRecipe, FinetuneRecipe, TrainingRecipe
from vlmforge.errors import UserError

RUN_DIR_ENV = "VLMFORGE_RUN_DIR"  # the run directory every rank writes to (set by rank 0 or a launch script)
RESUME_ENV = "VLMFORGE_RESUME_FROM"  # the checkpoint rank 0 resumes from, for the processes it starts
SPAWN_ENV = "VLMFORGE_SPAWNED_BY"  # pid of the rank-0 process that set the two above


def global_rank() -> int:
    """This process's rank from the launcher's environment (0 when launched alone)."""
    if "RANK" in os.environ:  # torchrun / torch.distributed
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:  # srun
        return int(os.environ["SLURM_PROCID"])
    # processes started by Lightning's launcher carry their node and local rank
    return int(os.environ.get("NODE_RANK", "0") or 0) + int(os.environ.get("LOCAL_RANK", "0") or 0)


def launched_world_size() -> int:
    """Processes started by an external launcher (torchrun, srun); 1 otherwise."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return int(os.environ.get("SLURM_NTASKS", "1"))


def emit_launch(recipe: TrainingRecipe, kind: str, path: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``path`` (a bash script that trains ``recipe`` with its own verb) and the resolved recipe
    beside it (replacing existing files only with ``overwrite``); returns both paths."""
    from vlmforge.storage import refuse_overwrite

    if kind not in ("slurm", "torchrun"):
        raise UserError(f"--emit-launch {kind!r}: expected slurm or torchrun")
    recipe_path = path.with_suffix(".recipe.yaml")
    refuse_overwrite([path, recipe_path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(dump_recipe(recipe), encoding="utf-8")
    script = slurm_script(recipe, recipe_path) if kind == "slurm" else torchrun_script(recipe, recipe_path)
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path, recipe_path


def training_verb_of(recipe: TrainingRecipe) -> str:
    """The command that trains this recipe: pretrain, finetune or align."""
    if isinstance(recipe, FinetuneRecipe):
        return "finetune"
    return "align" if isinstance(recipe, AlignRecipe) else "pretrain"


def _train_command(recipe: TrainingRecipe, recipe_path: str, prefix: str) -> str:
    return f"{prefix} {training_verb_of(recipe)} -c {recipe_path} --resume auto --yes"


def _data_workers(recipe: TrainingRecipe) -> int:
    """DataLoader workers per process (a finetune recipe's busiest stage)."""
    if isinstance(recipe, FinetuneRecipe):
        return max(stage.data.num_workers for stage in recipe.stages)
    return recipe.data.num_workers


def _requeue_on_sigterm(job: str) -> str:
    return (
        "status=$?\n"
        "# 143: stopped by SIGTERM after a checkpoint (time limit, preemption): queue the job again\n"
        f'if [ "$status" -eq 143 ]; then scontrol requeue "{job}"; fi\n'
        'exit "$status"\n'
    )


def _slurm_header(recipe: TrainingRecipe, job_name: str, runs: Path, output: str) -> str:
    train = recipe.train
    gpus = f"#SBATCH --gpus-per-node={train.devices}\n" if train.accelerator != "cpu" else ""
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name={job_name}\n"
        f"#SBATCH --nodes={train.num_nodes}\n"
        f"#SBATCH --ntasks-per-node={train.devices}\n"
        f"{gpus}"
        f"#SBATCH --cpus-per-task={_data_workers(recipe) + 1}\n"
        "#SBATCH --signal=TERM@120\n"
        "#SBATCH --requeue\n"
        "#SBATCH --open-mode=append\n"
        f"#SBATCH --output={runs}/{output}\n"
        "set -uo pipefail\n"
    )


def slurm_script(recipe: TrainingRecipe, recipe_path: Path) -> str:
    """sbatch script: one task per device; SIGTERM 120 s before the time limit -> checkpoint, exit 143,
    requeue; the requeued job resumes from the newest checkpoint in the same run directory."""
    runs = recipe.output_dir.resolve() / recipe.name
    return (
        _slurm_header(recipe, recipe.name, runs, "slurm-%j.out") + f"mkdir -p {shlex.quote(str(runs))}\n"
        "# every task writes into the same run directory; a requeued job keeps its id, so it resumes there\n"
        f"export {RUN_DIR_ENV}={shlex.quote(str(runs))}/slurm-${{SLURM_JOB_ID}}\n"
        "set +e\n"
        f"srun {_train_command(recipe, shlex.quote(str(recipe_path.resolve())), 'vlmforge')}\n"
        + _requeue_on_sigterm("$SLURM_JOB_ID")
    )


def slurm_array_script(job_name: str, children: list[tuple[TrainingRecipe, Path]]) -> str:
    """sbatch array script for a sweep: task i trains child i (every child shares the devices of the
    first, as a sweep's children do) in its own run directory, checkpoints on SIGTERM and is requeued
    alone; a requeued task resumes in the same run directory."""
    first = children[0][0]
    sweep_dir = first.output_dir.resolve()
    recipes = "".join(f"  {shlex.quote(str(path.resolve()))}\n" for _, path in children)
    names = "".join(f"  {shlex.quote(recipe.name)}\n" for recipe, _ in children)
    task = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    command = _train_command(first, '"$RECIPE"', "vlmforge")
    return (
        _slurm_header(first, job_name, sweep_dir, "slurm-%A_%a.out")
        + f"#SBATCH --array=0-{len(children) - 1}\n"
        f"RECIPES=(\n{recipes})\n"
        f"NAMES=(\n{names})\n"
        'RECIPE="${RECIPES[$SLURM_ARRAY_TASK_ID]}"\n'
        f'RUNS={shlex.quote(str(sweep_dir))}/"${{NAMES[$SLURM_ARRAY_TASK_ID]}}"\n'
        'mkdir -p "$RUNS"\n'
        "# one run directory per array task; a requeued task keeps its ids, so it resumes there\n"
        f'export {RUN_DIR_ENV}="$RUNS/slurm-{task}"\n'
        "set +e\n"
        f"srun {command}\n" + _requeue_on_sigterm(task)
    )


def torchrun_script(recipe: TrainingRecipe, recipe_path: Path) -> str:
    """torchrun script to start on every node (NODE_RANK, MASTER_ADDR and a shared RUN_ID per run)."""
    train = recipe.train
    runs = recipe.output_dir.resolve() / recipe.name
    if train.num_nodes > 1:
        run_id = ': "${RUN_ID:?set the same RUN_ID on every node, e.g. RUN_ID=$(date +%Y%m%d-%H%M%S)}"\n'
    else:
        run_id = ': "${RUN_ID:=$(date +%Y%m%d-%H%M%S)}"\n'
    return (
        "#!/bin/bash\n"
        f"# {recipe.name}: {train.num_nodes} node(s) x {train.devices} process(es). Run on every node with\n"
        "# NODE_RANK=0..N-1, MASTER_ADDR=<node 0 address> and the same RUN_ID (one run directory for all).\n"
        "set -euo pipefail\n"
        f"{run_id}"
        f"export {RUN_DIR_ENV}={shlex.quote(str(runs))}/torchrun-${{RUN_ID}}\n"
        f"torchrun --nnodes={train.num_nodes} --nproc-per-node={train.devices} \\\n"
        "  --node-rank=${NODE_RANK:-0} \\\n"
        "  --master-addr=${MASTER_ADDR:-127.0.0.1} --master-port=${MASTER_PORT:-29500} \\\n"
        f"  -m {_train_command(recipe, shlex.quote(str(recipe_path.resolve())), 'vlmforge_cli')}\n"
    )
