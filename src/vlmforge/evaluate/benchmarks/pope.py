"""POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models"): yes/no
questions about objects, one question file per sampling setting, scored as POPE's evaluate.py does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmforge.config.benchmarks_llava import PopeTask
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.answering import Answer, Asked, generate_answers, question_prompt
from vlmforge.evaluate.benchmarks.files import read_jsonl
from vlmforge.interop.inference_model import InferenceModel

LABELS = ("yes", "no")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int | str
    image: Path
    text: str
    label: str  # yes or no


def read_pope(path: Path, images: Path) -> list[PopeQuestion]:
    """A POPE file's questions (JSON lines {question_id, image, text, label}), images under ``images``."""
    questions = []
    for line, row in read_jsonl(path, "POPE question file"):
        fields = row if isinstance(row, dict) else {}
        absent = [key for key in ("question_id", "image", "text", "label") if key not in fields]
        if absent:
            raise UserError(f"{path}: line {line} lacks {', '.join(absent)}", hint="POPE lines have all four")
        if fields["label"] not in LABELS:
            raise UserError(f"{path}: line {line}: label must be 'yes' or 'no', not {fields['label']!r}")
        questions.append(
            PopeQuestion(
                fields["question_id"], images / str(fields["image"]), str(fields["text"]), fields["label"]
            )
        )
    return questions


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

    questions = read_pope(path, task.images)[: task.max_samples]
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
            "answer": a,
            "prediction": pope_answer(a),
        }
        for q, a in answered
    ]
    metrics = score([a for _, a in answered], [q.label for q, _ in answered]) if answered else {}
    return {**metrics, "samples": len(answered), **drop_counts(drops)}, predictions


def run(model: InferenceModel, task: PopeTask, batch_size: int) -> dict[str, Any]:
    per_file, predictions = {}, []
    for path in task.files:
        per_file[path.stem], file_predictions = run_file(model, task, path, batch_size)
        predictions += file_predictions
    scored = [metrics for metrics in per_file.values() if "accuracy" in metrics]
    means = {name: sum(m[name] for m in scored) / len(scored) for name in METRICS} if scored else {}
    return {**means, "files": per_file, "predictions": predictions}
