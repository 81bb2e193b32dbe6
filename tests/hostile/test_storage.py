"""Storage faults through the real CLI: the device filling up while a run writes, checkpoints damaged on
disk, and an unusable $TMPDIR. Faults are injected into the CLI process by ``faults/sitecustomize.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import DEBUG_RECIPE, SHORT_RUN, last_json, read_metrics, run_cli
from tests.hostile.checks import files_under, leftovers, no_traceback
from tests.hostile.faults.small_disk import used_bytes

FAULTS = Path(__file__).parent / "faults"
EXIT_DISK_FULL = 4
CKPT_10, CKPT_20 = "step-00000010.ckpt", "step-00000020.ckpt"


def _with_faults(**variables: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **variables}


def _small_disk(root: Path, capacity: int) -> dict[str, str]:
    return _with_faults(FAULT_DISK_ROOT=str(root), FAULT_DISK_BYTES=str(capacity))


def _pretrain(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "pretrain", "-c", str(DEBUG_RECIPE), *SHORT_RUN, *args, "--format", "json", cwd=cwd, env=env
    )


def _only_run(cwd: Path) -> Path:
    (run_dir,) = (cwd / "runs" / "clip-tiny").iterdir()
    return run_dir


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def _readable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint_and_exits_4(tmp_path: Path) -> None:
    # Room for the run's small files and one checkpoint (~420 kB) but not a second one.
    proc = _pretrain(tmp_path, "train.checkpoint.keep_last=5", env=_small_disk(tmp_path, 600_000))
    assert proc.returncode == EXIT_DISK_FULL, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    run_dir = _only_run(tmp_path)
    intact = run_dir / "checkpoints" / CKPT_10
    named = str(intact.relative_to(tmp_path))  # as the run names it: under output_dir, relative to cwd
    assert "no space left" in proc.stderr.lower()
    assert named in proc.stderr  # the newest intact checkpoint, by name
    assert f"--resume {run_dir.relative_to(tmp_path)}" in proc.stderr  # and how to go on from it
    assert leftovers(tmp_path) == []
    assert _checkpoints(run_dir) == [CKPT_10] and _readable(intact)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "no space left" in result["reason"].lower()
    assert result["intact_checkpoint"] == f"checkpoints/{CKPT_10}"
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 20))  # whole lines only

    # Resuming while the device is still full says so, and breaks nothing.
    before = files_under(tmp_path)
    recipe = (run_dir / "recipe.yaml").read_text()
    still_full = _small_disk(tmp_path, used_bytes(str(tmp_path)) + 100)
    proc = _pretrain(tmp_path, "--resume", "auto", env=still_full)
    assert proc.returncode == EXIT_DISK_FULL, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    assert "no space left" in proc.stderr.lower() and named in proc.stderr
    assert files_under(tmp_path) == before and leftovers(tmp_path) == []
    assert (run_dir / "recipe.yaml").read_text() == recipe and _readable(intact)

    # Once there is room again, the run goes on from the intact checkpoint.
    proc = _pretrain(tmp_path, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert result["status"] == "completed" and result["steps"] == 20
    assert result["resumed_from"] == named


def test_resume_auto_refuses_when_every_checkpoint_is_damaged(tmp_path: Path) -> None:
    proc = _pretrain(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run(tmp_path)
    (run_dir / "result.json").unlink()  # as if the run had been killed after its last checkpoint
    ckpts = run_dir / "checkpoints"
    shutil.copy(ckpts / CKPT_10, tmp_path / "good.ckpt")
    (ckpts / CKPT_10).write_bytes(b"")  # emptied
    (ckpts / CKPT_20).write_bytes((tmp_path / "good.ckpt").read_bytes()[:1000])  # cut short

    before = files_under(tmp_path)
    proc = _pretrain(tmp_path, "--resume", "auto")
    assert proc.returncode == 2, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    assert CKPT_10 in proc.stderr and CKPT_20 in proc.stderr  # the damaged files, by name
    assert "--resume never" in proc.stderr  # how to start over instead
    assert files_under(tmp_path) == before  # no fresh run was started

    # With an older checkpoint intact, the run resumes from it and says which file it skipped and why.
    shutil.copy(tmp_path / "good.ckpt", ckpts / CKPT_10)
    proc = _pretrain(tmp_path, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [line for line in proc.stderr.splitlines() if CKPT_20 in line and "skip" in line]
    assert skipped and "damaged" in skipped[0], proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert tmp_path / result["resumed_from"] == ckpts / CKPT_10 and result["steps"] == 20
    assert _readable(ckpts / CKPT_20)  # written again by the resumed run


def test_checkpoints_do_not_pass_through_tmpdir(tmp_path: Path) -> None:
    # $TMPDIR exists and is writable but has no room (a small /tmp, a quota); the run's own device has.
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = _pretrain(cwd, env=_small_disk(scratch, 0) | {"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    run_dir = cwd / last_json(proc.stdout)["run_dir"]
    assert _checkpoints(run_dir) == [CKPT_10, CKPT_20]
    assert all(_readable(run_dir / "checkpoints" / name) for name in (CKPT_10, CKPT_20))
    assert leftovers(tmp_path) == []
    assert [p for p in scratch.rglob("*") if p.is_file()] == []


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount small tmpfs devices (needs root and mount rights; skipped elsewhere), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_real_small_devices(tmp_path: Path, tmpfs: Callable[[Path, str], Path]) -> None:
    """The same faults on real devices, where the container allows mounting them."""
    scratch = tmpfs(tmp_path / "tmpdir", "64k")
    (scratch / "filler").write_bytes(b"\0" * 60_000)  # a $TMPDIR with a few kB left
    roomy = tmpfs(tmp_path / "roomy", "1100k")  # room for the run (two checkpoints)
    proc = _pretrain(roomy, env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _checkpoints(_only_run(roomy)) == [CKPT_10, CKPT_20]

    small = tmpfs(tmp_path / "small", "600k")  # room for one checkpoint
    proc = _pretrain(small, env={"TMPDIR": str(scratch)})
    assert proc.returncode == EXIT_DISK_FULL, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    run_dir = _only_run(small)
    assert str((run_dir / "checkpoints" / CKPT_10).relative_to(small)) in proc.stderr
    assert leftovers(small) == [] and _checkpoints(run_dir) == [CKPT_10]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
