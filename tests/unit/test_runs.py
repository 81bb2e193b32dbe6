"""Run directories, checkpoint discovery and resume-point selection (in-process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vlmforge import storage
from vlmforge.errors import UserError
from vlmforge.runs.directory import create_run_dir, find_resume_point
from vlmforge.storage import checkpoint_name, list_checkpoints, prune_checkpoints, write_json


def _ckpt(run_dir: Path, step: int, ok: bool = True) -> Path:
    path = run_dir / "checkpoints" / checkpoint_name(step)
    if ok:
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    else:
        path.write_bytes(b"torn")
    return path


def test_run_dirs_are_unique_and_have_checkpoint_folders(tmp_path: Path) -> None:
    first, second = create_run_dir(tmp_path, "x"), create_run_dir(tmp_path, "x")
    assert first != second and first.parent == second.parent == tmp_path / "x"
    assert (first / "checkpoints").is_dir()


def test_checkpoint_listing_ignores_temporary_files_and_prunes(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path, "x")
    for step in (5, 10, 15):
        _ckpt(run, step)
    (run / "checkpoints" / f".{checkpoint_name(20)}.tmp").write_bytes(b"in flight")
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        checkpoint_name(s) for s in (5, 10, 15)
    ]
    prune_checkpoints(run / "checkpoints", keep_last=2)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [checkpoint_name(s) for s in (10, 15)]


def test_resume_auto_picks_newest_readable_checkpoint_of_newest_run(tmp_path: Path) -> None:
    assert find_resume_point(tmp_path, "x", "auto") is None
    old = create_run_dir(tmp_path, "x")
    _ckpt(old, 50)
    new = create_run_dir(tmp_path, "x")
    good = _ckpt(new, 10)
    _ckpt(new, 20, ok=False)
    point = find_resume_point(tmp_path, "x", "auto")
    assert point is not None and point.run_dir == new and point.checkpoint == good
    write_json(new / "result.json", {"status": "completed"})
    assert find_resume_point(tmp_path, "x", "auto") is None  # finished: start fresh
    assert find_resume_point(tmp_path, "x", "never") is None


def test_resume_explicit_paths(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path, "x")
    good = _ckpt(run, 10)
    torn = _ckpt(run, 20, ok=False)
    assert find_resume_point(tmp_path, "x", str(run)).checkpoint == good
    assert find_resume_point(tmp_path, "x", str(good)).run_dir == run
    with pytest.raises(UserError, match="not a readable checkpoint"):
        find_resume_point(tmp_path, "x", str(torn))
    with pytest.raises(UserError, match="neither"):
        find_resume_point(tmp_path, "x", str(tmp_path / "absent.ckpt"))


def test_write_json_is_atomic_and_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"k": 0})
    assert json.loads(path.read_text()) == {"k": 0} and not list(tmp_path.glob(".*.tmp"))

    def crash(*args: object) -> None:  # the process dies between writing the new file and renaming it
        raise OSError("killed")

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_json(path, {"k": 1, "long": "x" * 100_000})
    assert json.loads(path.read_text()) == {"k": 0}  # the old content, whole: never a torn file


def test_resume_refuses_a_run_whose_checkpoints_are_all_damaged(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path, "x")
    torn = [_ckpt(run, 10, ok=False), _ckpt(run, 20, ok=False)]
    for resume in ("auto", str(run)):
        with pytest.raises(UserError, match="is damaged") as caught:
            find_resume_point(tmp_path, "x", resume)
        assert str(run / "checkpoints") in caught.value.message
        assert all(path.name in caught.value.message for path in torn)
        assert "--resume never" in (caught.value.hint or "")
    assert find_resume_point(tmp_path, "x", "never") is None


def test_resume_names_the_damaged_checkpoints_it_skips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = create_run_dir(tmp_path, "x")
    good = _ckpt(run, 10)
    torn = _ckpt(run, 20, ok=False)
    assert find_resume_point(tmp_path, "x", "auto").checkpoint == good
    (line,) = capsys.readouterr().err.splitlines()
    why = "not a whole checkpoint archive (cut short or overwritten)"
    assert line == f"skipped damaged checkpoint {torn}: {why}"


def test_resume_of_a_staged_run_refuses_a_stage_whose_checkpoints_are_all_damaged(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path, "x")
    first, second = (run / "stages" / name / "checkpoints" for name in ("first", "second"))
    for folder in (first, second):
        folder.mkdir(parents=True)
    torch.save({"state_dict": {}}, first / checkpoint_name(10))
    (second / checkpoint_name(5)).write_bytes(b"torn")  # the stage that wrote last
    os.utime(first, (1_000_000, 1_000_000))
    with pytest.raises(UserError, match="damaged") as caught:
        find_resume_point(tmp_path, "x", "auto")
    assert f"every checkpoint in {second} is damaged: {checkpoint_name(5)}" in caught.value.message
