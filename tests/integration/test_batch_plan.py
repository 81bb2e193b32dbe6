"""One batch plan per fit (a pretrain run, a finetune stage, an alignment): worked out once from the
recipe and honoured by the Trainer, the DeepSpeed config and ``actual.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.shipped import find_recipe

LLAVA = find_recipe("debug/llava-tiny")


@pytest.mark.parametrize(
    ("verb", "recipe", "expected"),
    [
        ("pretrain", "debug/clip-tiny", {"clip-tiny": (32, 16, 2)}),
        ("finetune", "debug/llava-tiny", {"align": (32, 16, 2), "instruct": (32, 8, 4)}),
        ("align", "debug/llava-dpo-tiny", {"llava-dpo-tiny": (32, 16, 2)}),
    ],
)
def test_emit_deepspeed_config_sizes_each_fit(
    tmp_path: Path, verb: str, recipe: str, expected: dict[str, tuple[int, int, int]]
) -> None:
    overrides = ["train.strategy.kind=deepspeed", "train.micro_batch_size=16"]
    if verb == "finetune":
        overrides.append("stages.1.micro_batch_size=8")
    proc = run_cli(
        verb, "-c", recipe, *overrides, "--emit", "deepspeed-config", "--format", "json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = last_json(proc.stdout)["deepspeed_configs"]
    assert set(written) == set(expected)
    for name, (batch, micro, accumulate) in expected.items():
        config = json.loads((tmp_path / written[name]).read_text())
        assert config["train_batch_size"] == batch
        assert config["train_micro_batch_size_per_gpu"] == micro
        assert config["gradient_accumulation_steps"] == accumulate


def test_emit_deepspeed_config_needs_the_deepspeed_strategy(tmp_path: Path) -> None:
    proc = run_cli("finetune", "-c", str(LLAVA), "--emit", "deepspeed-config", cwd=tmp_path)
    assert proc.returncode == 2 and "train.strategy.kind" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_finetune_micro_batch_changes_the_accumulation_it_trains_with(tmp_path: Path) -> None:
    short = ["stages.0.max_steps=2", "stages.1.max_steps=2", "eval=[]", "train.log_every_steps=1"]
    proc = run_cli(
        "finetune", "-c", str(LLAVA), *short, "train.micro_batch_size=8", "--format", "json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    actual = json.loads((run_dir / "actual.json").read_text())
    for stage in ("align", "instruct"):
        batch = actual["stages"][stage]["batch"]
        assert (batch["global_batch"], batch["micro_batch"], batch["accumulate"]) == (32, 8, 4)
        assert actual["stages"][stage]["steps"] == 2  # optimizer steps, not micro-batches
        logged = [json.loads(line) for line in (run_dir / "stages" / stage / "metrics.jsonl").open()]
        assert [row["step"] for row in logged if "step" in row] == [1, 2]
