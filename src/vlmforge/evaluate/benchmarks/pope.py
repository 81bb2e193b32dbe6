"""POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models"): yes/no
questions about objects, one question file per sampling setting, scored as POPE's evaluate.py does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.config.benchmarks_llava import PopeTask
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.answering import Answer, Asked, generate_answers, question_prompt
from vlmforge.evaluate.benchmarks.layout import image_paths, read_jsonl, require, subset

if TYPE_CHECKING:  # for annotations only: the model handle lives in a layer above
    from vlmforge.interop.inference_model import InferenceModel

LABELS = ("yes", "no")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int | str
    image: Path
    text: str
    label: str  # yes or no


def read_pope(path: Path, images: Path, max_samples: int | None = None) -> list[PopeQuestion]:
    """A POPE file's questions (JSON lines {question_id, image, text, label}; ``max_samples``: a fixed random
    subset), images under ``images``; every missing image is reported at once."""
    rows = read_jsonl(path, "a POPE question file: one {question_id, image, text, label} per line")
    if not rows:
        raise UserError(
            f"{path}: no questions", hint="give a POPE question file (e.g. coco_pope_random.json)"
        )
    fields = []
    for n in subset(len(rows), max_samples):
        where = f"{path}, question {n + 1}"
        label = require(rows[n], "label", str, where)
        if label not in LABELS:
            raise UserError(f"{where}: label must be 'yes' or 'no', not {label!r}")
        qid = require(rows[n], "question_id", (int, str), where)
        fields.append(
            (qid, require(rows[n], "image", str, where), require(rows[n], "text", str, where), label)
        )
    files = image_paths(images, [image for _, image, _, _ in fields], path)
    return [
        PopeQuestion(q, file, text, label) for (q, _, text, label), file in zip(fields, files, strict=True)
    ]


def score(answers: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE's metrics of free-text answers, each read as yes or no (``choice_metrics.pope_metrics``)."""
    from vlmforge.evaluate.choice_metrics import pope_metrics

    return pope_metrics(list(answers), list(labels))


def run_file(
    model: InferenceModel, task: PopeTask, path: Path, batch_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and predictions of one question file."""
    from vlmforge.evaluate.benchmarks.features import drop_counts
    from vlmforge.evaluate.choice_metrics import pope_answer

    questions = read_pope(path, task.images, task.max_samples)
    asked = [
        Asked(str(q.question_id), question_prompt(q.text, task.prompt_suffix), q.image) for q in questions
    ]
    outputs = generate_answers(model, asked, str(path), batch_size, task.max_new_tokens)
    answered = [(q, o.text) for q, o in zip(questions, outputs, strict=True) if isinstance(o, Answer)]
    drops = [o for o in outputs if not isinstance(o, Answer)]
    predictions = [
        {
            "file": path.name,
            "question_id": q.question_id,
            "image": q.image.name,
            "question": q.text,
            "label": q.label,
            "output": a,
            "prediction": pope_answer(a),
        }
        for q, a in answered
    ]
    metrics = score([a for _, a in answered], [q.label for q, _ in answered]) if answered else {}
    return {**metrics, "samples": len(answered), **drop_counts(drops)}, predictions


def run(model: InferenceModel, task: PopeTask, batch_size: int) -> dict[str, Any]:
    """Each file's metrics under ``files`` (by file name), and their mean over the files."""
    per_file, predictions = {}, []
    for path in task.files:
        per_file[path.stem], file_predictions = run_file(model, task, path, batch_size)
        predictions += file_predictions
    scored = [metrics for metrics in per_file.values() if "accuracy" in metrics]
    means = {name: sum(m[name] for m in scored) / len(scored) for name in METRICS} if scored else {}
    return {**means, "files": per_file, "predictions": predictions}
