"""WebDataset shards: index, security, accounting, exact-once splitting, `data check`, and a pretrain
run that stops above data.max_bad_fraction and completes below it. The shards are real tar files of
sklearn digits (PNG, JPEG, WebP) with planted problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import DEBUG_RECIPE, last_json, read_metrics, run_cli
from tests.webdataset_shards import ENTRIES, PER_SHARD, PLANTED, pretrain_on_shards, shards_config
from vlmforge.data.loader import CaptionedImages, GlobalBatchSampler
from vlmforge.data.sources import open_source
from vlmforge.data.tokenizers import WordVocab


# --------------------------------------------------------------------------------------- the CLI
def test_data_check_names_every_bad_sample(shards: tuple[Path, dict[str, Any]]) -> None:
    from rich.console import Console

    from vlmforge_cli.render import data_check_table

    root, _ = shards
    proc = run_cli("data", "check", str(root / "{00000..00002}.tar"), "--format", "json", cwd=root)
    assert proc.returncode == 1, proc.stderr  # 6 of 163 bad is above the default 1%: a run would stop
    report = last_json(proc.stdout)
    assert (report["entries"], report["kept"]) == (ENTRIES, ENTRIES - len(PLANTED))
    named = {(Path(d["shard"]).name, d["key"], d["reason"]) for d in report["bad_samples"]}
    assert named == {(f"{i // PER_SHARD:05d}.tar", f"{i:06d}", r) for i, r in PLANTED.items()}
    assert report["dropped"] == {r: list(PLANTED.values()).count(r) for r in set(PLANTED.values())}
    assert report["image_width"]["min"] == report["image_width"]["max"] == 24  # the too-small one is out
    assert report["caption_words"]["min"] == 3 and report["images_per_s"] > 0
    assert [s["dropped"] for s in report["shards"]] == [3, 2, 1]
    console = Console(record=True, width=200)
    data_check_table(console, report)
    text = console.export_text()
    assert all(f"{i:06d}" in text for i in PLANTED) and "decode_error" in text
    data = {"kind": "webdataset", "shards": str(root / "{00002..00003}.tar")}
    missing = run_cli("data", "check", "-c", str(DEBUG_RECIPE), f"data={json.dumps(data)}", cwd=root)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "1 shard file(s) not found" in missing.stderr and "00003.tar" in missing.stderr


@pytest.mark.slow
def test_pretrain_stops_above_the_bad_fraction_and_counts_below(
    shards: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = shards
    # 3 rejected when opened + 3 unreadable = 6 of 163: above 2% (3.26), within 5% (8.15)
    stopped = pretrain_on_shards(root, 0.02, tmp_path / "stop")
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert "above data.max_bad_fraction=0.02" in stopped.stderr and ".tar:0000" in stopped.stderr
    (run_dir,) = (tmp_path / "stop" / "runs" / "clip-tiny").iterdir()
    assert read_metrics(run_dir)[-1]["event"] == "stopped: data"
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))  # the run says why it ended
    assert result["status"] == "failed" and "max_bad_fraction" in result["metrics"]["stopped"]["reason"]

    done = pretrain_on_shards(root, 0.05, tmp_path / "done")
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    data = result["metrics"]["data"]
    assert (data["source_samples"], data["read"], data["kept"]) == (ENTRIES, 160, 157)  # one whole epoch
    assert data["dropped"] == {"decode_error": 1, "truncated": 1, "too_small": 1}
    assert data["rejected_at_open"] == {"bad_caption": 1, "missing_pair": 2}
    last = read_metrics(tmp_path / "done" / result["run_dir"])[-1]
    assert (last["data_read"], last["data_dropped"], last["data_dropped_truncated"]) == (160, 3, 1)


def _index_and_worker(items: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(int(it["index"]), int(it["worker"])) for it in items]


class _WithWorker(CaptionedImages):
    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, object]:
        item = super().__getitem__(key)
        item["worker"] = torch.utils.data.get_worker_info().id  # type: ignore[union-attr]
        return item


def test_two_ranks_by_two_workers_read_each_sample_once_per_epoch(
    shards: tuple[Path, dict[str, Any]],
) -> None:
    data = open_source(shards_config(shards[0]))
    dataset = _WithWorker(data, WordVocab.build(data.all_captions()), 8, seed=0)
    seen: list[int] = []
    for rank in (0, 1):
        sampler = GlobalBatchSampler(len(data), 32, 8, rank=rank, world_size=2, seed=5)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=_index_and_worker, num_workers=2
        )
        pairs = [pair for batch in loader for pair in batch]
        assert {worker for _, worker in pairs} == {0, 1}  # both workers of this rank took part
        seen += [index for index, _ in pairs]
    assert len(seen) == len(data) == 160  # 5 global batches of 32: the whole epoch
    assert sorted(seen) == list(range(len(data)))  # every sample exactly once across ranks and workers
