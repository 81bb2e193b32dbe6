"""Runs that survive failure: kill -9 + --resume auto, SIGTERM -> checkpoint + exit 143, torn checkpoints."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import DEBUG_RECIPE, last_json, run_cli, start_cli

pytestmark = pytest.mark.slow

# Long enough (a few seconds of steps) to be interrupted part-way; checkpoints every 50 steps.
LONG = [
    "train.max_steps=400",
    "train.checkpoint.every_steps=50",
    "train.checkpoint.keep_last=10",
    "train.log_every_steps=50",
    "eval=[]",
]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _wait_for(path: Path, proc, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def _only_run(cwd: Path, name: str) -> Path:
    runs = [p for p in (cwd / "runs" / name).iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def _resume_auto(cwd: Path):
    return run_cli(
        "pretrain",
        "-c",
        str(DEBUG_RECIPE),
        *LONG,
        "--resume",
        "auto",
        "--format",
        "json",
        cwd=cwd,
        check=True,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final checkpoint of an uninterrupted run."""
    cwd = tmp_path_factory.mktemp("reference")
    result = last_json(
        run_cli("pretrain", "-c", str(DEBUG_RECIPE), *LONG, "--format", "json", cwd=cwd, check=True).stdout
    )
    assert result["steps"] == 400
    return cwd / result["run_dir"] / "checkpoints" / "step-00000400.ckpt"


def test_kill_9_then_resume_auto_matches_uninterrupted(reference: Path, tmp_path: Path) -> None:
    proc = start_cli("pretrain", "-c", str(DEBUG_RECIPE), *LONG, cwd=tmp_path)
    run_dir = None
    while run_dir is None:
        time.sleep(0.05)
        if (tmp_path / "runs" / "clip-tiny").is_dir():
            run_dir = _only_run(tmp_path, "clip-tiny")
    _wait_for(run_dir / "checkpoints" / "step-00000100.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists()
    newest = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))[-1]
    assert int(newest.stem.split("-")[1]) < 400, "the run finished before it could be killed"

    # A torn write must never be loaded: a leftover temp file and a damaged newest checkpoint.
    (run_dir / "checkpoints" / ".step-00000399.ckpt.tmp").write_bytes(b"partial")
    (run_dir / "checkpoints" / "step-00000399.ckpt").write_bytes(b"PK\x03\x04 torn")

    resumed = _resume_auto(tmp_path)
    result = last_json(resumed.stdout)
    announced = [line for line in resumed.stderr.splitlines() if line.startswith("resuming from")]
    assert announced and announced[0].endswith(f"checkpoints/{newest.name}"), resumed.stderr[-2000:]
    assert "warn" not in resumed.stderr.lower(), resumed.stderr[-2000:]
    assert Path(result["resumed_from"]).name == newest.name
    assert result["status"] == "completed" and result["steps"] == 400
    assert _only_run(tmp_path, "clip-tiny") == run_dir  # continued in the same run directory
    assert _max_diff(run_dir / "checkpoints" / "step-00000400.ckpt", reference) <= 1e-6

    explicit = run_cli(
        "pretrain",
        "-c",
        str(DEBUG_RECIPE),
        *LONG,
        "--resume",
        str(run_dir / "checkpoints" / ".step-00000399.ckpt.tmp"),
        cwd=tmp_path,
    )
    assert explicit.returncode == 2 and "not a readable checkpoint" in explicit.stderr


def test_sigterm_saves_exits_143_and_resumes(reference: Path, tmp_path: Path) -> None:
    proc = start_cli("pretrain", "-c", str(DEBUG_RECIPE), *LONG, "--format", "json", cwd=tmp_path)
    while not (tmp_path / "runs" / "clip-tiny").is_dir():
        time.sleep(0.05)
    run_dir = _only_run(tmp_path, "clip-tiny")
    _wait_for(run_dir / "checkpoints" / "step-00000050.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    result = last_json(stdout)
    assert result["status"] == "preempted"
    stopped_at = result["steps"]
    assert 50 <= stopped_at < 400
    assert (run_dir / "checkpoints" / f"step-{stopped_at:08d}.ckpt").is_file()

    resumed = last_json(_resume_auto(tmp_path).stdout)
    assert resumed["steps"] == 400
    assert _max_diff(run_dir / "checkpoints" / "step-00000400.ckpt", reference) <= 1e-6


def test_resume_refuses_a_changed_recipe(reference: Path) -> None:
    cwd = reference.parents[4]
    proc = run_cli(
        "pretrain", "-c", str(DEBUG_RECIPE), *LONG, "optim.lr=0.1", "--resume", str(reference), cwd=cwd
    )
    assert proc.returncode == 2
    assert "optim.lr" in proc.stderr
