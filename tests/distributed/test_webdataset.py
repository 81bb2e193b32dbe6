"""WebDataset shards: index, security, accounting, exact-once splitting, `data check`, and a pretrain
run that stops above data.max_bad_fraction and completes below it. The shards are real tar files of
sklearn digits (PNG, JPEG, WebP) with planted problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEBUG_RECIPE, last_json, run_cli


def _pretrain(root: Path, max_bad_fraction: float, cwd: Path, *args: str, workers: int = 0) -> Any:
    data = {
        "kind": "webdataset",
        "shards": [str(root / "{00000..00002}.tar")],
        "image_size": 16,
        "batch_size": 32,
        "num_workers": workers,
        "max_bad_fraction": max_bad_fraction,
    }
    cwd.mkdir()
    return run_cli(
        "pretrain", "-c", str(DEBUG_RECIPE), f"data={json.dumps(data)}", "train.max_steps=5",
        "train.log_every_steps=5", "eval=[]", *args, "--format", "json", cwd=cwd,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_ranks_sum_their_counts(shards: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """2 DDP processes x 2 loader workers: one epoch read once in all, drops counted once."""
    ddp = ("train.devices=2", "train.strategy.kind=ddp")
    proc = _pretrain(shards[0], 0.05, tmp_path / "ddp", *ddp, workers=2)
    assert proc.returncode == 0, proc.stderr
    data = last_json(proc.stdout)["metrics"]["data"]
    assert (data["read"], data["kept"]) == (160, 157)
    assert data["dropped"] == {"decode_error": 1, "truncated": 1, "too_small": 1}
