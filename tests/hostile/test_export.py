"""`vlmforge export` refuses what it cannot do well — an unfinished run, an unknown format, a format the
model cannot be expressed in, an occupied output folder, a corrupt checkpoint — with exit 2, one screen,
and nothing half-written; --overwrite replaces an old export only once the new one is complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import run_cli
from tests.hostile.checks import files_under, no_traceback


def refused(*args: str, cwd: Path) -> str:
    proc = run_cli("export", *args, cwd=cwd)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    no_traceback(proc.stderr)
    return proc.stderr


def copied_run(tiny_run: dict[str, Any], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run_dir"], run)
    return run


def test_every_problem_of_the_request_is_named_at_once(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    run = copied_run(tiny_run, tmp_path)
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps(result | {"status": "preempted"}))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    stderr = refused(str(run), "--format", "onnx", "-o", str(occupied), "--dtype", "fp8", cwd=tmp_path)
    for expected in (
        "'onnx' is not an export format",
        "'fp8'",
        "has not completed",
        "not empty",
        "--overwrite",
    ):
        assert expected in stderr
    assert (occupied / "keep.txt").read_text() == "mine"
    assert files_under(tmp_path) == {
        "run",
        "occupied",
        "occupied/keep.txt",
        *(f"run/{p}" for p in files_under(run)),
    }


def test_a_format_the_model_cannot_take_is_refused_with_the_ones_it_can(
    coca_run: Path, tmp_path: Path
) -> None:
    stderr = refused(str(coca_run), "--format", "hf", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert "transformers has no CoCa model" in stderr and "coca models export as open_clip, timm" in stderr
    assert not (tmp_path / "out").exists()


def test_a_corrupt_checkpoint_leaves_no_partial_export(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    run = copied_run(tiny_run, tmp_path)
    named = json.loads((run / "result.json").read_text())["checkpoint"]
    data = (run / named).read_bytes()
    (run / named).write_bytes(data[: len(data) // 3])
    stderr = refused(str(run), "--format", "open_clip", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert named.split("/")[-1] in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no output, no .partial folder


def test_overwrite_replaces_an_old_export_and_not_a_run(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.bin").write_text("old export")
    proc = run_cli(
        "export",
        str(tiny_run["run_dir"]),
        "--format",
        "open_clip",
        "-o",
        str(out),
        "--overwrite",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "stale.bin").exists() and (out / "open_clip_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the old copy was removed
    stderr = refused(
        str(tiny_run["run_dir"]),
        "--format",
        "open_clip",
        "-o",
        str(tiny_run["run_dir"]),
        "--overwrite",
        cwd=tmp_path,
    )
    assert "run directory itself" in stderr
    assert (tiny_run["run_dir"] / "recipe.yaml").is_file()


def test_not_a_run_directory(tmp_path: Path) -> None:
    stderr = refused(str(tmp_path), "--format", "open_clip", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert "not a run directory" in stderr
