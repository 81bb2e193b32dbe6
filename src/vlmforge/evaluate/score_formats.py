"""The benchmark file formats ``vlmforge eval score`` reads, and how each scores its predictions: VQA v2
(official results and annotations JSON), COCO captions (results and annotations JSON), POPE (answers and
question JSON lines), multiple choice (MMBench-style letters) and RefCOCO-style grounding."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError
from vlmforge.evaluate.score_readers import first_few, read_records, record_id, require_fields, require_id

Keyed = list[tuple[Any, Any]]  # (id, value) in file order


@dataclass(frozen=True)
class Scorer:
    """One benchmark: its files read as (id, value) pairs, and its metrics of the predictions aligned with
    the references (None where a prediction is missing: it scores 0)."""

    benchmark: str  # the evaluation its metrics follow
    scale: str  # the range of its metrics
    read_predictions: Callable[[Path], Keyed]
    read_references: Callable[[Path], Keyed]
    score: Callable[[Sequence[Any], Sequence[Any]], dict[str, Any]]


def _keyed(path: Path, role: str, ids: Sequence[str], field: str, inside: str | None = None) -> Keyed:
    """(id, ``field``) of each record of a file whose records all carry an id and the field."""
    records = read_records(path, role, inside)
    require_id(records, ids, path, role)
    require_fields(records, [field], path, role)
    return [(record_id(record, ids), record[field]) for record in records]


# ---------------------------------------------------------------------------------------------- VQA v2
def vqav2_predictions(path: Path) -> Keyed:
    """The official results format: [{"question_id", "answer"}]."""
    return _keyed(path, "predictions", ["question_id"], "answer")


def vqav2_references(path: Path) -> Keyed:
    """The official annotations JSON: {"annotations": [{"question_id", "answers": [{"answer"}...],
    "answer_type"}]} -> (question_id, (its answers, its answer type or None))."""
    records = read_records(path, "references", "annotations")
    require_fields(records, ["question_id", "answers"], path, "references")
    bad = [
        i
        for i, r in enumerate(records)
        if not all(isinstance(a, dict) and "answer" in a for a in r["answers"])
    ]
    if bad:
        raise UserError(
            f"references file {path}: the answers of items {first_few(bad)} are not objects with 'answer'",
            hint='each annotation has "answers": [{"answer": "..."}, ...] (VQA v2 annotations format)',
        )
    return [
        (r["question_id"], ([str(a["answer"]) for a in r["answers"]], r.get("answer_type"))) for r in records
    ]


def vqav2_score(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    from vlmforge.evaluate.vqa_accuracy import vqa_score

    types = [answer_type for _, answer_type in references]
    return vqa_score(
        [
            "" if p is None else str(p) for p in predictions
        ],  # no annotator answers nothing: a missing one scores 0
        [answers for answers, _ in references],
        types if all(t is not None for t in types) else None,
    )


# ----------------------------------------------------------------------------------------- COCO captions
def coco_predictions(path: Path) -> Keyed:
    """The COCO caption results format: [{"image_id", "caption"}]."""
    return _keyed(path, "predictions", ["image_id"], "caption")


def coco_references(path: Path) -> Keyed:
    """A COCO captions annotations JSON: {"annotations": [{"image_id", "caption"}], ...} -> (image_id, its
    captions)."""
    grouped: dict[Any, list[str]] = {}
    for image_id, caption in _keyed(path, "references", ["image_id"], "caption", "annotations"):
        grouped.setdefault(image_id, []).append(str(caption))
    return list(grouped.items())


def coco_score(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    from vlmforge.evaluate.caption_metrics import caption_scores

    return caption_scores(["" if p is None else str(p) for p in predictions], [list(r) for r in references])


# ------------------------------------------------------------------------------------------------- POPE
def pope_predictions(path: Path) -> Keyed:
    """POPE answers, one JSON object per line: {"question_id", "text"}."""
    return _keyed(path, "predictions", ["question_id"], "text")


def pope_references(path: Path) -> Keyed:
    """POPE questions, one JSON object per line: {"question_id", "label": "yes"|"no", ...}."""
    return _keyed(path, "references", ["question_id"], "label")


def pope_score(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    from vlmforge.evaluate.choice_metrics import pope_metrics

    # a missing answer is the wrong one
    answers = [
        ("yes" if label == "no" else "no") if p is None else str(p)
        for p, label in zip(predictions, references, strict=True)
    ]
    return pope_metrics(answers, [str(label) for label in references])


# --------------------------------------------------------------------------------------- multiple choice
def choice_predictions(path: Path) -> Keyed:
    """[{"question_id", "prediction"}]: a letter or a free-form answer."""
    return _keyed(path, "predictions", ["question_id"], "prediction")


def choice_references(path: Path) -> Keyed:
    """[{"question_id", "answer": letter, "options"?: [texts] or {letter: text}}] -> (question_id,
    (answer letter, option letters, option texts or None))."""
    records = read_records(path, "references")
    require_fields(records, ["question_id", "answer"], path, "references")
    keyed = [(r["question_id"], _choice(r)) for r in records]
    bad = [qid for qid, (answer, letters, _) in keyed if answer not in letters]
    if bad:
        raise UserError(
            f"references file {path}: the answers of questions {first_few(bad)} are not option letters",
            hint='"answer" is the letter of the right option (A, B, ...), one of its "options"',
        )
    return keyed


def _choice(record: dict[str, Any]) -> tuple[str, list[str], list[str] | None]:
    """(answer letter, option letters, option texts): letters A.. for listed options; A-D (or up to the
    answer's letter) when the question lists none."""
    answer, options = str(record["answer"]).strip().upper(), record.get("options")
    if isinstance(options, dict):
        return answer, [str(k).upper() for k in options], [str(v) for v in options.values()]
    if isinstance(options, list) and options:
        return answer, list(string.ascii_uppercase[: len(options)]), [str(v) for v in options]
    last = string.ascii_uppercase.find(answer) if len(answer) == 1 else -1
    return answer, list(string.ascii_uppercase[: max(4, last + 1)]), None


def choice_score(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    from vlmforge.evaluate.choice_metrics import multiple_choice_accuracy, parse_choice

    chosen = [
        None if p is None else parse_choice(str(p), letters, options)
        for p, (_, letters, options) in zip(predictions, references, strict=True)
    ]
    return {"accuracy": multiple_choice_accuracy(chosen, [answer for answer, _, _ in references])}


# ---------------------------------------------------------------------------------------------- RefCOCO
GROUNDING_IDS = ["id", "question_id"]
ANSWER_FIELDS = ("box", "text", "answer")


def grounding_predictions(path: Path) -> Keyed:
    """[{"id" or "question_id", "box": [x1, y1, x2, y2]}], or a text answer ("text"/"answer") holding
    such a box, in the references' coordinates -> (id, box or None where the answer names none)."""
    from vlmforge.evaluate.grounding_metrics import parse_box

    records = read_records(path, "predictions")
    require_id(records, GROUNDING_IDS, path, "predictions")
    lacking = [i for i, r in enumerate(records) if not any(name in r for name in ANSWER_FIELDS)]
    if lacking:
        raise UserError(
            f"predictions file {path}: items {first_few(lacking)} have no 'box', 'text' or 'answer'",
            hint='give each prediction "box": [x1, y1, x2, y2] or a text answer holding one',
        )
    keyed = []
    for i, record in enumerate(records):
        if "box" in record:
            box = _box(record["box"], path, "predictions", i)
        else:
            box = parse_box(str(record.get("text", record.get("answer"))))
        keyed.append((record_id(record, GROUNDING_IDS), box))
    return keyed


def grounding_references(path: Path) -> Keyed:
    """RefCOCO-style [{"id" or "question_id", "image", "expression", "box": [x, y, width, height]}] ->
    (id, (x1, y1, x2, y2))."""
    from vlmforge.evaluate.grounding_metrics import xywh_to_xyxy

    records = read_records(path, "references")
    require_id(records, GROUNDING_IDS, path, "references")
    require_fields(records, ["box"], path, "references")
    return [
        (record_id(r, GROUNDING_IDS), xywh_to_xyxy(_box(r["box"], path, "references", i)))
        for i, r in enumerate(records)
    ]


def _box(value: Any, path: Path, role: str, item: int) -> list[float]:
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    raise UserError(
        f"{role} file {path}, item {item} (counting from 0): 'box' {value!r} is not four numbers",
        hint="a box is [x1, y1, x2, y2] in predictions, [x, y, width, height] in references",
    )


def grounding_score(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    from vlmforge.evaluate.grounding_metrics import grounding_accuracy

    return grounding_accuracy(list(predictions), list(references))
