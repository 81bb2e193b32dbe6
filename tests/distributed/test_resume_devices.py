"""Resume on a different device count: a checkpoint written by 2 processes resumes on 1 and 1 -> 2, with the
same global batch, no sample missed or repeated (asserted on the sample ids each step trained on) and the
loss continuing as in the uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEBUG_RECIPE, pretrain_json, read_metrics

COMMON = [
    "data.batch_size=32",
    "train.max_steps=20",
    "train.log_every_steps=1",
    "train.record_sample_ids=true",
    "train.checkpoint.every_steps=10",
    "eval=[]",
]
# Contrastive losses depend on the batch the softmax runs over (micro-batch x devices), so the layouts
# compared keep it equal: 2 x 8 (accumulating 2) vs 1 x 16 (accumulating 2); 1 x 32 vs 2 x 16.
TWO_BY_8 = ["train.devices=2", "train.strategy.kind=ddp", "train.micro_batch_size=8"]
ONE_BY_16 = ["train.devices=1", "train.strategy.kind=auto", "train.micro_batch_size=16"]
ONE_BY_32 = ["train.devices=1", "train.strategy.kind=auto"]
TWO_BY_16 = ["train.devices=2", "train.strategy.kind=ddp"]
# Same samples, same gradient up to float summation order; far tighter than the 5% bar in practice.
LOSS_TOLERANCE = 0.05


def _steps(run_dir: Path) -> dict[int, list[int]]:
    """{optimizer step: sorted sample ids of its global batch}, from every rank's record."""
    steps: dict[int, list[int]] = {}
    for path in sorted((run_dir / "samples").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(record["step"], []).extend(record["ids"])
    return {step: sorted(ids) for step, ids in steps.items()}


def _resume_elsewhere(cwd: Path, run_dir: Path, layout: list[str], name: str) -> Path:
    """Resume the run's step-10 checkpoint in a fresh directory (only its recipe and that checkpoint)."""
    target = cwd / "runs" / "original" / name
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "recipe.yaml", target / "recipe.yaml")
    checkpoint = target / "checkpoints" / "step-00000010.ckpt"
    shutil.copy(run_dir / "checkpoints" / "step-00000010.ckpt", checkpoint)
    result = pretrain_json(cwd, DEBUG_RECIPE, *COMMON, *layout, "name=original", "--resume", str(checkpoint))
    assert result["steps"] == 20 and result["status"] == "completed"
    return cwd / result["run_dir"]


def _assert_same_samples(original: Path, resumed: Path) -> None:
    uninterrupted, continued = _steps(original), _steps(resumed)
    assert sorted(continued) == list(range(11, 21))  # exactly the remaining steps, each once
    for step in range(11, 21):
        assert continued[step] == uninterrupted[step], f"step {step} trained on other samples"
    seen = [i for step in range(1, 21) for i in (uninterrupted if step <= 10 else continued)[step]]
    assert len(seen) == len(set(seen)) == 20 * 32  # one epoch so far: no sample missed or repeated


@pytest.mark.parametrize(
    ("first", "then"), [(TWO_BY_8, ONE_BY_16), (ONE_BY_32, TWO_BY_16)], ids=["2->1", "1->2"]
)
@pytest.mark.distributed
@pytest.mark.slow
def test_resume_on_another_device_count(first: list[str], then: list[str], tmp_path: Path) -> None:
    original = tmp_path / pretrain_json(tmp_path, DEBUG_RECIPE, *COMMON, *first, "name=original")["run_dir"]
    resumed = _resume_elsewhere(tmp_path, original, then, "again")
    _assert_same_samples(original, resumed)
    expected = {r["step"]: r["loss"] for r in read_metrics(original)}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed)}
    assert sorted(got) == list(range(11, 21))
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=LOSS_TOLERANCE), f"step {step}"
    assert got[20] < expected[1]

    if first is TWO_BY_8:  # fewer devices, same micro-batch: 4 micro-batches per step instead of 2
        more_accumulation = ["train.devices=1", "train.strategy.kind=auto", "train.micro_batch_size=8"]
        _assert_same_samples(original, _resume_elsewhere(tmp_path, original, more_accumulation, "acc"))
