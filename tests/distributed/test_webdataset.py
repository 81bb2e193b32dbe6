"""WebDataset shards: index, security, accounting, exact-once splitting, `data check`, and a pretrain
run that stops above data.max_bad_fraction and completes below it. The shards are real tar files of
sklearn digits (PNG, JPEG, WebP) with planted problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import last_json
from tests.webdataset_shards import pretrain_on_shards


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_ranks_sum_their_counts(shards: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """2 DDP processes x 2 loader workers: one epoch read once in all, drops counted once."""
    ddp = ("train.devices=2", "train.strategy.kind=ddp")
    proc = pretrain_on_shards(shards[0], 0.05, tmp_path / "ddp", *ddp, workers=2)
    assert proc.returncode == 0, proc.stderr
    data = last_json(proc.stdout)["metrics"]["data"]
    assert (data["read"], data["kept"]) == (160, 157)
    assert data["dropped"] == {"decode_error": 1, "truncated": 1, "too_small": 1}
