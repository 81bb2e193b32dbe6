"""The unit lane's guard (tests/unit/conftest.py) refuses what belongs in the other lanes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.unit.conftest import MOVE


def test_starting_python_is_refused() -> None:
    with pytest.raises(AssertionError, match="tests/integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert "tests/integration" in MOVE


def test_building_a_trainer_is_refused() -> None:
    from vlmforge.training import trainer

    with pytest.raises(AssertionError, match="train nothing"):
        trainer.build_trainer()  # type: ignore[call-arg]
