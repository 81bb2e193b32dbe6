"""The step interface and the per-process resources steps share (scoring model, text detectors,
captioners)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from vlmforge.config.curate import CurateRecipe, step_name
from vlmforge.curate.batch import Batch, Decision, Table


class Step(ABC):
    """A filter or sampler. ``measure`` does the per-sample work (decode-side, run in parallel per shard)
    and returns named columns; ``apply`` decides on those columns, vectorised.

    A ``local`` step decides each sample on its own columns only, so it can prune a shard as soon as it
    is measured; a global step (dedup, top-fraction, clustering, balancing) decides on every sample that
    reaches it, across shards, in input order."""

    kind: ClassVar[str]
    local: ClassVar[bool] = True
    rewrites_caption: ClassVar[bool] = False

    def __init__(self, cfg: Any, resources: Resources) -> None:
        self.cfg = cfg
        self.name = step_name(cfg)
        self.resources = resources

    @abstractmethod
    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        """Per-sample columns for the rows of ``batch`` (arrays of len(batch) along axis 0)."""

    @abstractmethod
    def apply(self, table: Table) -> Decision:
        """Keep mask and reasons for the rows of ``table``, vectorised over its columns."""


class Resources:
    """Loaded once per process and shared by the steps: the scoring model, text detectors, captioners."""

    def __init__(self, recipe: CurateRecipe) -> None:
        self.recipe = recipe
        self._scorer: Any = None
        self._detectors: dict[str, Any] = {}
        self._captioners: dict[str, Any] = {}

    def scorer(self) -> Any:
        if self._scorer is None:
            from vlmforge.curate.scorers import load_scorer

            assert self.recipe.model is not None  # the recipe validator requires it for scoring steps
            self._scorer = load_scorer(self.recipe.model)
        return self._scorer

    def detector(self, cfg: Any) -> Any:
        key = cfg.model_dump_json()
        if key not in self._detectors:
            from vlmforge.curate.textdetect import build_detector

            self._detectors[key] = build_detector(cfg)
        return self._detectors[key]

    def captioner(self, cfg: Any, field: str) -> Any:
        """The captioner of a step's ``captioner:`` section, built (and checked) on first use."""
        key = cfg.model_dump_json()
        if key not in self._captioners:
            from vlmforge.curate.captioners import build_captioner

            self._captioners[key] = build_captioner(cfg, field)
        return self._captioners[key]
