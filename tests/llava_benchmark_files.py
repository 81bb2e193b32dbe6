"""Tiny copies of the LLaVA-style benchmarks in their exact public file layouts, with real photos
(scikit-image's bundled ones, shrunk): what `vlmforge eval` reads from a user's disk."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

PHOTOS = {"astronaut": (48, 48), "chelsea": (72, 48), "coffee": (48, 64)}  # name: (width, height)


def photo(name: str) -> Any:
    """A bundled photo shrunk to its size in PHOTOS (a PIL image)."""
    import skimage.data
    from PIL import Image

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(PHOTOS[name])


def jpeg_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _answers(*texts: str) -> list[dict[str, Any]]:
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i + 1} for i, t in enumerate(texts)]


def write_vqav2(root: Path) -> dict[str, Path]:
    """Official VQAv2 val2014 files (questions, annotations) and COCO-named images: 3 questions, 2 images."""
    images = root / "val2014"
    images.mkdir(parents=True)
    for image_id, name in ((42, "astronaut"), (7, "chelsea")):
        photo(name).save(images / f"COCO_val2014_{image_id:012d}.jpg")
    questions = [
        {"image_id": 42, "question": "What color is the flag?", "question_id": 420},
        {"image_id": 42, "question": "Is this person an astronaut?", "question_id": 421},
        {"image_id": 7, "question": "How many cats are there?", "question_id": 70},
    ]
    annotations = [
        {"question_id": 420, "image_id": 42, "answers": _answers(*["red"] * 6, *["white"] * 4),
         "multiple_choice_answer": "red", "answer_type": "other", "question_type": "what color is the"},
        {"question_id": 421, "image_id": 42, "answers": _answers(*["yes"] * 10),
         "multiple_choice_answer": "yes", "answer_type": "yes/no", "question_type": "is this person"},
        {"question_id": 70, "image_id": 7, "answers": _answers(*["1"] * 9, "one"),
         "multiple_choice_answer": "1", "answer_type": "number", "question_type": "how many"},
    ]  # fmt: skip
    info = {"description": "tiny VQAv2", "version": "2.0", "year": 2017}
    common = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}}
    return {
        "questions": _write_json(
            root / "v2_OpenEnded_mscoco_val2014_questions.json",
            {**common, "data_subtype": "val2014", "questions": questions},
        ),
        "annotations": _write_json(
            root / "v2_mscoco_val2014_annotations.json",
            {**common, "data_subtype": "val2014", "annotations": annotations},
        ),
        "images": images,
    }


def write_pope(root: Path) -> dict[str, Any]:
    """Two POPE question files (JSON lines, as POPE's output/coco/*.json) about COCO images."""
    images = root / "val2014"
    images.mkdir(parents=True)
    photo("astronaut").save(images / "COCO_val2014_000000000042.jpg")
    photo("coffee").save(images / "COCO_val2014_000000000009.jpg")
    rows = {
        "coco_pope_adversarial": [
            (1, "COCO_val2014_000000000042.jpg", "Is there a person in the image?", "yes"),
            (2, "COCO_val2014_000000000042.jpg", "Is there a dog in the image?", "no"),
            (3, "COCO_val2014_000000000009.jpg", "Is there a cup in the image?", "yes"),
        ],
        "coco_pope_random": [
            (1, "COCO_val2014_000000000009.jpg", "Is there a car in the image?", "no"),
            (2, "COCO_val2014_000000000042.jpg", "Is there a flag in the image?", "yes"),
        ],
    }
    files = []
    for stem, lines in rows.items():
        text = "".join(
            json.dumps({"question_id": q, "image": image, "text": t, "label": label}) + "\n"
            for q, image, t, label in lines
        )
        files.append(root / f"{stem}.json")
        files[-1].write_text(text, encoding="utf-8")
    return {"files": files, "images": images}


MMBENCH_HEADER = (
    "index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category",
    "comment", "split",
)  # fmt: skip


def write_mmbench(root: Path) -> Path:
    """An MMBench dev TSV as pandas writes it (``to_csv(sep="\\t")``: a field with a newline or a quote is
    quoted): 3 questions (one with three options and a two-line hint, one without a hint, one whose image is
    the index of the row holding it, as VLMEvalKit's TSVs store repeated images)."""
    cat, cup = (base64.b64encode(jpeg_bytes(n)).decode() for n in ("chelsea", "coffee"))
    rows = [
        ("10", "What animal is shown?", "nan", "dog", "cat", "bird", "fish", "B", "image_topic", cat, "src",
         "coarse_perception", "nan", "dev"),
        ("11", "What is in the \"cup\"?", "The photo was taken at breakfast.\nIt is hot.", "tea", "coffee",
         "milk", "", "B", "object_localization", cup, "src", "fine-grained_perception", "nan", "dev"),
        ("12", "What color is the animal?", "nan", "orange", "green", "blue", "purple", "A", "image_topic",
         "10", "src", "coarse_perception", "nan", "dev"),
    ]  # fmt: skip
    path = root / "MMBench_DEV_EN.tsv"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows([MMBENCH_HEADER, *rows])
    return path


def _problem(question: str, choices: list[str], answer: int, hint: str, image: str | None, split: str,
             subject: str) -> dict[str, Any]:  # fmt: skip
    return {
        "question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
        "task": "closed choice", "grade": "grade4", "subject": subject, "topic": "t", "category": "c",
        "skill": "s", "lecture": "", "solution": "", "split": split,
    }  # fmt: skip


def write_scienceqa(root: Path) -> dict[str, Path]:
    """ScienceQA's problems.json, pid_splits.json and images/<split>/<pid>/image.png: two test problems
    with an image, one without (left out of ScienceQA-IMG), one train problem."""
    png = "image.png"
    problems = {
        "5": _problem("Which animal is this?", ["dog", "cat"], 1, "", png, "test", "natural science"),
        "8": _problem("Which drink is this?", ["coffee", "juice", "water"], 0, "Look at the cup.", png,
                      "test", "social science"),
        "9": _problem("Which word is a noun?", ["run", "table"], 1, "", None, "test", "language science"),
        "2": _problem("Which animal is this?", ["cat", "cow"], 0, "", png, "train", "natural science"),
    }  # fmt: skip
    images = root / "images"
    for pid, name in (("5", "chelsea"), ("8", "coffee"), ("2", "chelsea")):
        split = problems[pid]["split"]
        (images / split / pid).mkdir(parents=True)
        photo(name).save(images / split / pid / "image.png")
    splits = {"train": ["2"], "val": [], "test": ["5", "8", "9"], "minival": [], "minitest": ["5"]}
    return {
        "problems": _write_json(root / "problems.json", problems),
        "splits": _write_json(root / "pid_splits.json", splits),
        "images": images,
    }


def write_refcoco(root: Path) -> Path:
    """A referring-expression list [{image, expression, box: [x, y, w, h]}] with its images beside it."""
    root.mkdir(parents=True, exist_ok=True)
    photo("chelsea").save(root / "cat.jpg")
    photo("coffee").save(root / "cup.jpg")
    refs = [
        {"image": "cat.jpg", "expression": "the cat's face", "box": [20, 6, 30, 28]},
        {"image": "cup.jpg", "expression": "the coffee cup", "box": [4, 14, 40, 36]},
    ]
    return _write_json(root / "refs.json", refs)
