"""VQAv2 (Goyal et al. 2017) from the official question and annotation JSON files and the COCO image
folder; scored with the VQA accuracy of the official evaluation script, or, when no annotations are given
(test-dev), answered in the evaluation server's results format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.config.benchmarks_llava import VqaV2Task
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.answering import Answer, Asked, generate_answers, question_prompt
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, require, subset

if TYPE_CHECKING:  # for annotations only: the model handle lives in a layer above
    from vlmforge.interop.inference_model import InferenceModel

# test-dev is a subset of test2015: its questions file says "test-dev2015", its images are named test2015
IMAGE_SUBTYPES = {"test-dev2015": "test2015"}


@dataclass(frozen=True)
class VqaQuestion:
    question_id: int
    image: Path
    question: str


@dataclass(frozen=True)
class VqaReference:
    answers: list[str]  # the ten human answers
    answer_type: str  # yes/no, number or other


def image_name(subtype: str, image_id: int) -> str:
    """COCO's file name of ``image_id`` in the questions' ``data_subtype``."""
    return f"COCO_{IMAGE_SUBTYPES.get(subtype, subtype)}_{image_id:012d}.jpg"


def read_questions(path: Path, images: Path, max_samples: int | None = None) -> list[VqaQuestion]:
    """The questions of an official questions file (``max_samples``: a fixed random subset of them), each
    with its COCO image under ``images``; every missing image is reported at once."""
    document = read_json(
        path, "the official VQAv2 questions JSON (v2_OpenEnded_mscoco_<subtype>_questions.json)"
    )
    entries = require(document, "questions", list, str(path))
    subtype = require(document, "data_subtype", str, str(path))
    fields = []
    for n in subset(len(entries), max_samples):
        where = f"{path}: questions[{n}]"
        qid, image_id = (
            require(entries[n], "question_id", int, where),
            require(entries[n], "image_id", int, where),
        )
        fields.append((qid, image_id, require(entries[n], "question", str, where)))
    files = image_paths(images, [image_name(subtype, image_id) for _, image_id, _ in fields], path)
    return [VqaQuestion(qid, file, text) for (qid, _, text), file in zip(fields, files, strict=True)]


def read_annotations(path: Path) -> dict[int, VqaReference]:
    """question_id -> the human answers and answer type of an official annotations file."""
    document = read_json(path, "the official VQAv2 annotations JSON (v2_mscoco_<subtype>_annotations.json)")
    references = {}
    for n, entry in enumerate(require(document, "annotations", list, str(path))):
        where = f"{path}: annotations[{n}]"
        answers = require(entry, "answers", list, where)
        if not answers:
            raise UserError(f"{where}: 'answers' is empty", hint="each question has its ten human answers")
        texts = [require(answer, "answer", str, f"{where}.answers[{i}]") for i, answer in enumerate(answers)]
        answer_type = entry.get("answer_type", "other")
        references[require(entry, "question_id", int, where)] = VqaReference(texts, str(answer_type))
    return references


def references_for(questions: Sequence[VqaQuestion], references: dict[int, VqaReference], path: Path) -> None:
    """Every question must have its annotation."""
    absent = [q.question_id for q in questions if q.question_id not in references]
    if absent:
        raise UserError(
            f"{path}: no annotation for {len(absent)} question(s), e.g. question_id {absent[0]}",
            hint="give the annotations file of the same split as the questions",
        )


def score(predictions: Sequence[str], references: Sequence[VqaReference]) -> dict[str, float]:
    """VQA accuracy overall and per answer type (``evaluate.vqa_accuracy.vqa_score``)."""
    from vlmforge.evaluate.vqa_accuracy import vqa_score

    return vqa_score(
        list(predictions), [r.answers for r in references], answer_types=[r.answer_type for r in references]
    )


def submission(question_ids: Sequence[int], answers: Sequence[str]) -> list[dict[str, Any]]:
    """The evaluation server's results format: [{question_id, answer}]."""
    return [{"question_id": q, "answer": a} for q, a in zip(question_ids, answers, strict=True)]


def run(model: InferenceModel, task: VqaV2Task, batch_size: int) -> dict[str, Any]:
    """Answers normalised as the evaluation server does (LLaVA-1.5 submits them so:
    convert_vqav2_for_submission.py), then scored; without annotations, given as ``submission``, the list
    the server takes (written to eval/<name>.submission.json)."""
    from vlmforge.evaluate.benchmarks.features import drop_counts
    from vlmforge.evaluate.vqa_accuracy import normalize_vqa_answer

    questions = read_questions(task.questions, task.images, task.max_samples)
    references = read_annotations(task.annotations) if task.annotations else None
    if references is not None and task.annotations is not None:
        references_for(questions, references, task.annotations)
    asked = [
        Asked(str(q.question_id), question_prompt(q.question, task.prompt_suffix), q.image) for q in questions
    ]
    outputs = generate_answers(model, asked, str(task.questions), batch_size, task.max_new_tokens)
    answered = [(q, o.text) for q, o in zip(questions, outputs, strict=True) if isinstance(o, Answer)]
    drops = [o for o in outputs if not isinstance(o, Answer)]
    answers = [normalize_vqa_answer(text) for _, text in answered]
    predictions = [
        {"question_id": q.question_id, "question": q.question, "output": text, "prediction": answer}
        for (q, text), answer in zip(answered, answers, strict=True)
    ]
    result: dict[str, Any] = {"samples": len(answered), **drop_counts(drops)}
    if references is None:
        ids = [q.question_id for q, _ in answered]
        return {**result, "submission": submission(ids, answers), "predictions": predictions}
    used = [references[q.question_id] for q, _ in answered]
    for prediction, reference in zip(predictions, used, strict=True):
        prediction["references"] = reference.answers
    return {**result, **score(answers, used), "predictions": predictions}
