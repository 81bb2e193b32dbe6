"""Multiple-choice benchmarks asked as LLaVA-1.5 asks them (hint, question, lettered options, "Answer with
the option's letter"): MMBench (Liu et al. 2023) from its TSV, with CircularEval, and ScienceQA-IMG (Lu et
al. 2022) from problems.json; accuracy overall and per category."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.config.benchmarks_llava import MmbenchTask, ScienceQaTask
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.answering import (
    Answer,
    Asked,
    ImageSource,
    generate_answers,
    question_prompt,
)
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, read_text, require, subset

if TYPE_CHECKING:  # for annotations only: the model handle lives in a layer above
    from vlmforge.interop.inference_model import InferenceModel

LETTERS = "ABCDE"
MMBENCH_OPTIONS = "ABCD"
MMBENCH_COLUMNS = ("index", "question", "A", "B", "image")
ABSENT = ("", "nan", "none")  # an empty option or hint, as LLaVA's is_none reads MMBench's TSV


@dataclass(frozen=True)
class ChoiceQuestion:
    key: str  # MMBench's index or ScienceQA's pid
    question: str  # hint (context) and question, without the options
    options: list[str]
    answer: int | None  # index into options; None where the file has no answers (a test split)
    category: str
    image: ImageSource


@dataclass(frozen=True)
class Scored:
    key: str
    round: int  # 0: the options in file order; 1...: CircularEval's rotations
    category: str
    predicted: str | None  # the letter read from the answer
    answer: str


def choice_prompt(question: ChoiceQuestion, options: Sequence[str], suffix: str) -> str:
    """LLaVA-1.5's multiple-choice prompt (``model_vqa_mmbench.py``): the question, one "X. option" line
    per option, then the instruction."""
    lines = [
        question.question,
        *(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=False)),
    ]
    return question_prompt("\n".join(lines), suffix)


def _present(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ABSENT


def _decode(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{where}: column 'image' is not base64") from None


def read_pandas_tsv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(first line, row by column name) of a tab-separated file quoted as pandas writes it (a field with a
    tab, newline or quote is quoted): MMBench's TSVs are written and read (LLaVA's ``pd.read_table``) with
    pandas, and their hints can span lines, which ``layout.read_tsv`` (one row per line) does not take."""
    text = read_text(path)  # a missing file or not UTF-8: the error names it
    csv.field_size_limit(sys.maxsize)  # a cell holds a whole base64 image
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    absent = [name for name in required if name not in (reader.fieldnames or [])]
    if absent:
        raise UserError(
            f"{path}: no column {', '.join(absent)}", hint=f"an MMBench TSV has {', '.join(required)}"
        )
    rows, start = [], reader.line_num + 1
    for row in reader:
        rows.append((start, row))
        start = reader.line_num + 1
    return rows


def mmbench_question(row: dict[str, str], image: str, where: str) -> ChoiceQuestion:
    """One TSV row: options A-D up to the first empty one (LLaVA's get_options), the hint before the
    question, the base64 image decoded."""
    options = []
    for letter in MMBENCH_OPTIONS:
        if not _present(row.get(letter)):
            break
        options.append(str(row[letter]))
    if len(options) < 2:
        raise UserError(f"{where}: needs options A and B")
    answer = row.get("answer")
    if _present(answer) and answer not in MMBENCH_OPTIONS[: len(options)]:
        raise UserError(f"{where}: answer {answer!r} is not one of its option letters")
    hint = row.get("hint")
    text = f"{hint}\n{row['question']}" if _present(hint) else str(row["question"])
    index = MMBENCH_OPTIONS.index(answer) if answer and _present(answer) else None
    return ChoiceQuestion(
        row["index"], text, options, index, row.get("category") or "", _decode(image, where)
    )


def read_mmbench(path: Path, max_samples: int | None = None) -> list[ChoiceQuestion]:
    """MMBench's TSV (``max_samples``: a fixed random subset of its questions); an image is base64 or
    (VLMEvalKit's TSVs) the index of the row holding the same image."""
    rows = read_pandas_tsv(path, MMBENCH_COLUMNS)
    encoded = {row["index"]: row["image"] for _, row in rows}
    questions = []
    for n in subset(len(rows), max_samples):
        line, row = rows[n]
        image = encoded.get(row["image"], row["image"]) if row["image"].isdigit() else row["image"]
        questions.append(mmbench_question(row, image, f"{path}: line {line}"))
    return questions


def scienceqa_ids(problems: dict[str, Any], splits: Path | None, split: str) -> list[str]:
    """The problem ids of ``split``: pid_splits.json's list when given, else each problem's 'split'."""
    if splits is None:
        return [pid for pid, problem in problems.items() if problem.get("split") == split]
    document = read_json(splits, "ScienceQA's pid_splits.json ({split: [pid, ...]})")
    if not isinstance(document, dict) or not isinstance(document.get(split), list):
        known = ", ".join(document) if isinstance(document, dict) else "none"
        raise UserError(f"{splits}: no split {split!r} (splits: {known})", hint="set the task's split")
    absent = [str(pid) for pid in document[split] if str(pid) not in problems]
    if absent:
        raise UserError(f"{splits}: {len(absent)} id(s) of {split!r} not in problems.json, e.g. {absent[0]}")
    return [str(pid) for pid in document[split]]


def scienceqa_question(pid: str, problem: Any, where: str, image: Path) -> ChoiceQuestion:
    """One image problem, its hint as "Context: ..." (LLaVA's ScienceQA prompt)."""
    choices, answer = require(problem, "choices", list, where), require(problem, "answer", int, where)
    question = require(problem, "question", str, where)
    if not 2 <= len(choices) <= len(LETTERS) or not 0 <= answer < len(choices):
        raise UserError(f"{where}: 'answer' must index its {len(choices)} choices (2 to {len(LETTERS)})")
    hint = str(problem.get("hint") or "").strip()
    text = f"Context: {hint}\n{question}" if hint else question
    return ChoiceQuestion(
        pid, text, [str(c) for c in choices], answer, str(problem.get("subject", "")), image
    )


def read_scienceqa(
    problems_path: Path, splits: Path | None, split: str, images: Path, max_samples: int | None = None
) -> list[ChoiceQuestion]:
    """ScienceQA-IMG: the problems of ``split`` that have an image (``max_samples``: a fixed random subset),
    their images at ``<images>/<split>/<pid>/image.png``; every missing image is reported at once."""
    problems = read_json(problems_path, "ScienceQA's problems.json ({pid: {question, choices, answer, ...}})")
    if not isinstance(problems, dict) or not all(isinstance(p, dict) for p in problems.values()):
        raise UserError(
            f"{problems_path}: expected an object {{pid: problem}}", hint="give ScienceQA's problems.json"
        )
    with_image = [pid for pid in scienceqa_ids(problems, splits, split) if problems[pid].get("image")]
    if not with_image:
        raise UserError(f"{problems_path}: no problem with an image in split {split!r}")
    chosen = [with_image[i] for i in subset(len(with_image), max_samples)]
    files = image_paths(images, [f"{split}/{pid}/{problems[pid]['image']}" for pid in chosen], problems_path)
    return [
        scienceqa_question(pid, problems[pid], f"{problems_path}: {pid}", file)
        for pid, file in zip(chosen, files, strict=True)
    ]


def _accuracy(scored: Sequence[Scored]) -> float:
    from vlmforge.evaluate.choice_metrics import multiple_choice_accuracy

    return multiple_choice_accuracy([s.predicted for s in scored], [s.answer for s in scored])


def _circular_accuracy(scored: Sequence[Scored]) -> float:
    from vlmforge.evaluate.choice_metrics import circular_accuracy

    return circular_accuracy([s.key for s in scored], [s.predicted == s.answer for s in scored])


def score(scored: Sequence[Scored], circular: bool) -> dict[str, Any]:
    """Accuracy of the first pass (the options in file order), overall and per category; with circular,
    CircularEval's accuracy (every rotation right) overall and per category (MMBench §3.2)."""
    first = [s for s in scored if s.round == 0]
    categories = sorted({s.category for s in scored})
    out: dict[str, Any] = {
        "accuracy": _accuracy(first),
        "accuracy_by_category": {c: _accuracy([s for s in first if s.category == c]) for c in categories},
    }
    if circular:
        out["circular_accuracy"] = _circular_accuracy(scored)
        out["circular_accuracy_by_category"] = {
            c: _circular_accuracy([s for s in scored if s.category == c]) for c in categories
        }
    return out


def rounds(question: ChoiceQuestion, circular: bool) -> list[tuple[list[str], int | None]]:
    """(options, answer) per asking: every rotation for CircularEval, else the file's order."""
    from vlmforge.evaluate.choice_metrics import circular_options

    if circular and question.answer is not None:
        return circular_options(question.options, question.answer)
    return [(question.options, question.answer)]


def run_questions(
    model: InferenceModel,
    questions: Sequence[ChoiceQuestion],
    source: Path,
    circular: bool,
    suffix: str,
    new: int,
    batch_size: int,
) -> dict[str, Any]:
    """Ask every question (each rotation with circular), read a letter from each answer, and score."""
    from vlmforge.evaluate.benchmarks.features import drop_counts
    from vlmforge.evaluate.choice_metrics import parse_choice

    asked = [(q, r, options, a) for q in questions for r, (options, a) in enumerate(rounds(q, circular))]
    prompts = [Asked(q.key, choice_prompt(q, options, suffix), q.image) for q, _, options, _ in asked]
    outputs = generate_answers(model, prompts, str(source), batch_size, new)
    predictions, scored, drops = [], [], {}
    for (question, round_index, options, answer), output in zip(asked, outputs, strict=True):
        if not isinstance(output, Answer):
            drops[question.key] = output  # once per question, not per rotation
            continue
        letters = LETTERS[: len(options)]
        letter = parse_choice(output.text, letters, options)
        truth = None if answer is None else letters[answer]
        predictions.append(
            {
                "index": question.key,
                "round": round_index,
                "category": question.category,
                "options": options,
                "answer": truth,
                "output": output.text,
                "prediction": letter,
            }
        )
        if truth is not None:
            scored.append(Scored(question.key, round_index, question.category, letter, truth))
    result = {"samples": len({p["index"] for p in predictions}), **drop_counts(list(drops.values()))}
    return {**result, **(score(scored, circular) if scored else {}), "predictions": predictions}


def run_mmbench(model: InferenceModel, task: MmbenchTask, batch_size: int) -> dict[str, Any]:
    """MMBench; a TSV without answers (a test split) gives predictions only."""
    questions = read_mmbench(task.path, task.max_samples)
    if task.circular and any(q.answer is None for q in questions):
        raise UserError(
            f"{task.path}: circular needs the 'answer' column", hint="set circular: false for a test split"
        )
    return run_questions(
        model, questions, task.path, task.circular, task.prompt_suffix, task.max_new_tokens, batch_size
    )


def run_scienceqa(model: InferenceModel, task: ScienceQaTask, batch_size: int) -> dict[str, Any]:
    """ScienceQA-IMG, with accuracy per subject (natural, social, language science)."""
    questions = read_scienceqa(task.problems, task.splits, task.split, task.images, task.max_samples)
    return run_questions(
        model, questions, task.problems, False, task.prompt_suffix, task.max_new_tokens, batch_size
    )
