"""``vlmforge eval score``: benchmark metrics of predictions made elsewhere, no model involved. A registry
(``SCORERS``: task -> its files' readers and metrics) and the dispatch: read both files, match every
prediction to a reference by id (missing, extra and duplicate ids are reported), score."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError, raise_all
from vlmforge.evaluate import score_formats as formats
from vlmforge.evaluate.score_readers import first_few

SCORERS: dict[str, formats.Scorer] = {
    "vqav2": formats.Scorer(
        "VQA v2 accuracy (GT-Vision-Lab/VQA vqaEval.py)",
        "0-1",
        formats.vqav2_predictions,
        formats.vqav2_references,
        formats.vqav2_score,
    ),
    "coco_captions": formats.Scorer(
        "COCO caption evaluation (tylin/coco-caption)",
        "0-1 (CIDEr: 0-10)",
        formats.coco_predictions,
        formats.coco_references,
        formats.coco_score,
    ),
    "pope": formats.Scorer(
        "POPE (AoiDragon/POPE evaluate.py)",
        "0-1",
        formats.pope_predictions,
        formats.pope_references,
        formats.pope_score,
    ),
    "multiple_choice": formats.Scorer(
        "MMBench option matching (VLMEvalKit)",
        "0-1",
        formats.choice_predictions,
        formats.choice_references,
        formats.choice_score,
    ),
    "refcoco": formats.Scorer(
        "RefCOCO accuracy at IoU 0.5 (Mao et al. 2016)",
        "0-1",
        formats.grounding_predictions,
        formats.grounding_references,
        formats.grounding_score,
    ),
}


@dataclass
class IdMatch:
    """How the predictions' ids meet the references'."""

    missing: list[Any] = field(default_factory=list)  # references with no prediction
    extra: list[Any] = field(default_factory=list)  # predictions of no reference
    duplicate: list[Any] = field(default_factory=list)  # ids predicted more than once

    def problems(self, predictions: Path, references: Path, allow_missing: bool) -> list[UserError]:
        found = []
        if self.duplicate:
            found.append(
                UserError(
                    f"{predictions}: {len(self.duplicate)} ids have several predictions "
                    f"({first_few(self.duplicate)})",
                    hint="keep one prediction per id",
                )
            )
        if self.extra:
            found.append(
                UserError(
                    f"{predictions}: {len(self.extra)} predictions name ids that {references} does not have "
                    f"({first_few(self.extra)})",
                    hint="score against the references these predictions were made for",
                )
            )
        if self.missing and not allow_missing:
            found.append(
                UserError(
                    f"{predictions}: {len(self.missing)} references have no prediction "
                    f"({first_few(self.missing)})",
                    hint="predict every reference, or pass --allow-missing (a missing prediction scores 0)",
                )
            )
        return found


def _key(item_id: Any) -> str:
    """Ids compare as text: 42 in one file matches "42" in the other."""
    return str(item_id)


def match_ids(predicted: list[Any], referenced: list[Any]) -> IdMatch:
    """Missing, extra and duplicate ids, each in file order."""
    counts = Counter(_key(i) for i in predicted)
    known = {_key(i) for i in referenced}
    seen: set[str] = set()
    match = IdMatch()
    for item_id in predicted:
        key = _key(item_id)
        if counts[key] > 1 and key not in seen:
            match.duplicate.append(item_id)
        if key not in known and key not in seen:
            match.extra.append(item_id)
        seen.add(key)
    match.missing = [i for i in referenced if _key(i) not in counts]
    return match


def duplicate_references(referenced: list[Any], references: Path) -> list[UserError]:
    repeated = [i for i, n in Counter(_key(i) for i in referenced).items() if n > 1]
    if not repeated:
        return []
    return [
        UserError(
            f"{references}: {len(repeated)} ids appear more than once ({first_few(repeated)})",
            hint="give each reference item its own id",
        )
    ]


@dataclass
class ScoreResult:
    task: str
    benchmark: str
    predictions: Path
    references: Path
    scale: str
    metrics: dict[str, Any]  # numbers, and a note where a metric could not be computed
    counts: dict[str, int]
    missing: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "benchmark": self.benchmark,
            "predictions": str(self.predictions),
            "references": str(self.references),
            "scale": self.scale,
            "metrics": self.metrics,
            "counts": self.counts,
            "missing_ids": self.missing[:20],
        }


def score(task: str, predictions: Path, references: Path, allow_missing: bool = False) -> ScoreResult:
    """Score the ``predictions`` file against the ``references`` file with ``task``'s metrics (0-1)."""
    if task not in SCORERS:
        raise UserError(f"unknown task {task!r}", hint=f"one of: {', '.join(SCORERS)}")
    scorer = SCORERS[task]
    referenced = scorer.read_references(references)
    predicted = scorer.read_predictions(predictions)
    if not referenced:
        raise UserError(
            f"references file {references} holds no items", hint="give the benchmark's references"
        )
    ref_ids = [i for i, _ in referenced]
    match = match_ids([i for i, _ in predicted], ref_ids)
    raise_all(
        duplicate_references(ref_ids, references) + match.problems(predictions, references, allow_missing)
    )
    by_id = {_key(i): value for i, value in predicted}
    aligned = [by_id.get(_key(i)) for i in ref_ids]
    counts = {
        "references": len(referenced),
        "predictions": len(predicted),
        "scored": len(referenced) - len(match.missing),
        "missing": len(match.missing),
    }
    metrics = scorer.score(aligned, [value for _, value in referenced])
    return ScoreResult(
        task, scorer.benchmark, predictions, references, scorer.scale, metrics, counts, match.missing
    )
