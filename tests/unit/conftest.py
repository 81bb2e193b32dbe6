"""The unit lane runs in-process code only: starting a process (the CLI, torchrun, a worker pool) or building
a training Trainer fails the test, with the folder it belongs in."""

from __future__ import annotations

import multiprocessing.process
import subprocess
from typing import Any

import pytest

MOVE = (
    "unit tests start no process and train nothing: move this test to tests/integration or tests/distributed"
)


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(MOVE)


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse)
    monkeypatch.setattr("vlmforge.training.trainer.build_trainer", _refuse)
