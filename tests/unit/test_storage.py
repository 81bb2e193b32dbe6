"""Writing files when the device is full or $TMPDIR is unusable, and telling damaged checkpoints apart
(in-process; the same faults through the CLI are in tests/hostile/test_storage.py)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from tests.hostile.faults.small_disk import SmallDisk, used_bytes
from vlmforge.runs.directory import CURRENT_RUN_DIR, newest_intact_checkpoint
from vlmforge.runs.lifecycle import records_disk_full
from vlmforge.storage import (
    DiskFull,
    append_line,
    checkpoint_damage,
    checkpoint_name,
    disk_full,
    write_json,
    write_json_directly,
    write_text,
)
from vlmforge.training.callbacks import SameFolderCheckpointIO


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SmallDisk:
    """``tmp_path`` as a device whose capacity the test sets (``disk.capacity``)."""
    disk = SmallDisk(tmp_path, capacity=10**9)
    monkeypatch.setattr(builtins, "open", disk.open)
    monkeypatch.setattr(io, "open", disk.open)
    return disk


def _fill(disk: SmallDisk, free: int) -> None:
    disk.capacity = used_bytes(disk.root) + free


def test_atomic_writes_on_a_full_disk_keep_the_old_file(tmp_path: Path, small_disk: SmallDisk) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"k": 0})
    _fill(small_disk, 5)
    with pytest.raises(DiskFull) as caught:
        write_json(path, {"k": 1, "long": "x" * 1000})
    assert caught.value.path == path and "no space left" in caught.value.message.lower()
    assert json.loads(path.read_text()) == {"k": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(DiskFull):
        write_text(tmp_path / "b.yaml", "y" * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_appended_lines_are_whole_or_absent(tmp_path: Path, small_disk: SmallDisk) -> None:
    log = tmp_path / "metrics.jsonl"
    append_line(log, json.dumps({"step": 1}))
    _fill(small_disk, 10)  # room for part of the next line only
    with pytest.raises(DiskFull):
        append_line(log, json.dumps({"step": 2, "loss": 1.234567}))
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"step": 1}]


def test_a_failure_record_is_written_in_place_or_not_at_all(tmp_path: Path, small_disk: SmallDisk) -> None:
    path = tmp_path / "result.json"
    _fill(small_disk, 10)
    assert not write_json_directly(path, {"status": "failed", "reason": "x" * 100})
    assert not path.exists()
    _fill(small_disk, 1000)
    assert write_json_directly(path, {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}


def test_lack_of_space_is_recognised_behind_other_errors() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/x/y")
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        found = disk_full(outer)
    assert found is not None and found.path == Path("/x/y")
    quota = disk_full(Exception("Error while serializing: I/O error: Disk quota exceeded (os error 122)"))
    assert quota is not None  # safetensors (Rust) reports it in its message
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full(ValueError("no space here")) is None


def test_checkpoints_are_written_next_to_their_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tmpdir(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint went through $TMPDIR")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "gettempdir"):
        monkeypatch.setattr(tempfile, name, no_tmpdir)
    path = tmp_path / "checkpoints" / checkpoint_name(10)
    SameFolderCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 10}, path)
    assert checkpoint_damage(path) is None
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_checkpoint_cut_short_by_a_full_disk_is_removed(tmp_path: Path, small_disk: SmallDisk) -> None:
    path = tmp_path / checkpoint_name(10)
    _fill(small_disk, 2000)
    with pytest.raises(DiskFull) as caught:
        SameFolderCheckpointIO().save_checkpoint({"w": torch.zeros(10_000)}, path)
    assert caught.value.path == path
    assert list(tmp_path.iterdir()) == []


def test_damage_is_described(tmp_path: Path) -> None:
    good, empty, torn, other, folder = (tmp_path / checkpoint_name(step) for step in range(1, 6))
    torch.save({"state_dict": {}}, good)
    empty.write_bytes(b"")
    torn.write_bytes(good.read_bytes()[:-50])
    with zipfile.ZipFile(other, "w") as archive:  # a whole archive, but not a checkpoint
        archive.writestr("notes.txt", "hello")
    folder.mkdir()
    assert checkpoint_damage(good) is None
    assert checkpoint_damage(empty) == "empty file"
    assert "cut short" in (checkpoint_damage(torn) or "")
    assert (checkpoint_damage(other) or "").startswith("torch cannot open it: ")
    assert "meta.pt" in (checkpoint_damage(folder) or "")


def test_a_verb_that_runs_out_of_space_records_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    intact = run_dir / "checkpoints" / checkpoint_name(10)
    torch.save({"state_dict": {}}, intact)
    torn = run_dir / "checkpoints" / checkpoint_name(20)
    torn.write_bytes(b"torn")
    half = run_dir / "checkpoints" / f".{checkpoint_name(30)}.tmp"

    @records_disk_full
    def run() -> None:
        CURRENT_RUN_DIR.set(run_dir)
        half.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull) as caught:
        run()
    assert caught.value.run_dir == run_dir and caught.value.intact == intact
    assert caught.value.recorded and not half.exists()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "no space left" in result["reason"].lower()
    assert result["intact_checkpoint"] == f"checkpoints/{checkpoint_name(10)}"
    assert newest_intact_checkpoint(run_dir) == intact
    assert CURRENT_RUN_DIR.get() is None  # reset for the next run in this process

    (run_dir / "checkpoints" / checkpoint_name(10)).unlink()
    with pytest.raises(DiskFull) as caught:
        run()  # before the first checkpoint
    assert caught.value.intact is None and caught.value.recorded
    assert json.loads((run_dir / "result.json").read_text())["intact_checkpoint"] is None

    @records_disk_full
    def other() -> None:
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        other()
