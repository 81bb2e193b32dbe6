"""The unit lane runs in-process code only: starting a Python process (the CLI, torchrun, a worker pool) or
building a training Trainer fails the test, naming the folder it belongs in. (Libraries may still probe
the system at import, e.g. ctypes asking ``ldconfig``: only Python processes are refused.)"""

from __future__ import annotations

import multiprocessing.process
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MOVE = "unit tests start no process and train nothing: move this test to tests/integration (or distributed)"
_popen_init = subprocess.Popen.__init__


def _guarded_popen(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
    program = Path(str(args[0] if isinstance(args, list | tuple) else str(args).split()[0])).name
    if (
        program.startswith(("python", "torchrun", "vlmforge", "deepspeed"))
        or program == Path(sys.executable).name
    ):
        raise AssertionError(MOVE)
    _popen_init(self, args, *rest, **kwargs)


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(MOVE)


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _guarded_popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse)
    monkeypatch.setattr("vlmforge.training.trainer.build_trainer", _refuse)
