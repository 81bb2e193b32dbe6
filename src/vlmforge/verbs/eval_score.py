"""`vlmforge eval score`: a benchmark's metrics of predictions made elsewhere (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

from vlmforge.evaluate.scoring import ScoreResult, score


def run(task: str, predictions: Path, references: Path, allow_missing: bool = False) -> ScoreResult:
    """Score ``predictions`` against ``references`` with ``task``'s metrics (``evaluate.scoring``)."""
    return score(task, predictions, references, allow_missing)
