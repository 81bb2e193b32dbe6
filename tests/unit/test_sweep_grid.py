"""Sweep grids: axes parsed from --grid, children expanded (product or seeded sample), a recorded sweep
refused when the grid changes, and the results' headline metrics."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vlmforge.errors import UserError
from vlmforge.launch import slurm_array_script
from vlmforge.runs.sweep_grid import (
    RECORD,
    check_same_sweep,
    expand,
    identity,
    parse_axes,
    parse_axis,
)
from vlmforge.runs.sweep_results import headline_metrics
from vlmforge.storage import write_json


def test_axis_values_stay_typed_as_override_text() -> None:
    axis = parse_axis("optim.lr=[1e-3, 3e-4]")
    assert axis.key == "optim.lr" and axis.values == ("1e-3", "3e-4")
    assert parse_axis("train.max_steps=7").values == ("7",)  # a single value is an axis of one
    assert parse_axis("eval=[[], [zeroshot]]").values == ("[]", "[zeroshot]")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["optim.lr=[]"], "empty"),
        (["optim.lr=[1, 1]"], "twice"),
        (["optim.lr=[1]", "optim.lr=[2]"], "more than once"),
        ([], "at least one --grid"),
    ],
)
def test_bad_axes_are_refused(flags: list[str], expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        parse_axes(flags)


def test_children_are_the_product_in_axis_order() -> None:
    axes = parse_axes(["optim.lr=[1,2]", "seed=[0,1,2]"])
    children = expand(axes)
    assert len(children) == 6
    assert children[0] == ["optim.lr=1", "seed=0"] and children[-1] == ["optim.lr=2", "seed=2"]
    assert len({tuple(c) for c in children}) == 6


def test_random_children_are_a_seeded_sample_of_the_product() -> None:
    axes = parse_axes(["optim.lr=[1,2,3,4]", "seed=[0,1,2]"])
    product = expand(axes)
    drawn = expand(axes, 5, seed=7)
    expected = [product[i] for i in sorted(random.Random(7).sample(range(12), 5))]
    assert drawn == expected and drawn == expand(axes, 5, seed=7)
    assert expand(axes, 5, seed=8) != drawn
    with pytest.raises(UserError, match="the grid has 12 points"):
        expand(axes, 13)


def test_a_recorded_sweep_with_another_grid_is_refused(tmp_path: Path) -> None:
    recorded = identity("debug/clip-tiny", ["eval=[]"], [["optim.lr=1"], ["optim.lr=2"]])
    assert check_same_sweep(tmp_path, recorded) is None  # nothing recorded yet
    write_json(tmp_path / RECORD, recorded | {"children": [{"overrides": c} for c in recorded["children"]]})
    assert check_same_sweep(tmp_path, recorded) is not None
    changed = identity("debug/clip-tiny", ["eval=[]"], [["optim.lr=1"], ["optim.lr=3"]])
    with pytest.raises(UserError, match="children differ") as caught:
        check_same_sweep(tmp_path, changed)
    assert "--out" in (caught.value.hint or "")


def test_headline_metrics_keep_scores_and_losses_not_bookkeeping() -> None:
    metrics = {
        "train": {"loss": 3.5, "lr": 0.0, "step": 6},
        "eval": {"zeroshot": {"top1": 0.2, "seconds": 0.1, "samples": 360, "classes": 10}},
        "data": {"read": 192},
    }
    assert headline_metrics(metrics) == {"train.loss": 3.5, "eval.zeroshot.top1": 0.2}


def test_array_script_runs_child_i_in_task_i(tmp_path: Path) -> None:
    from vlmforge.config.load import load_recipe
    from vlmforge.config.shipped import find_recipe

    base = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    children = [
        (base.model_copy(update={"name": f"clip-tiny-00{i}", "output_dir": tmp_path}), tmp_path / f"{i}.yaml")
        for i in range(3)
    ]
    script = slurm_array_script("clip-tiny-sweep", children)
    assert "#SBATCH --array=0-2\n" in script and "#SBATCH --job-name=clip-tiny-sweep\n" in script
    listed = script.split("RECIPES=(\n", 1)[1].split(")\n", 1)[0].split()
    assert listed == [str(path) for _, path in children]
    assert 'srun vlmforge pretrain -c "$RECIPE" --resume auto --yes' in script
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in script
