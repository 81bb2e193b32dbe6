"""The LLaVA-style benchmarks' scoring helpers: correct answers, written by hand as a model would answer,
score 1; the padded-square box layout of RefCOCO maps back to the image's pixels."""

from __future__ import annotations

import pytest

from vlmforge.config.benchmarks_llava import SHORT_ANSWER
from vlmforge.evaluate.benchmarks import multiple_choice, pope, refcoco, vqav2
from vlmforge.evaluate.benchmarks.answering import question_prompt
from vlmforge.evaluate.benchmarks.multiple_choice import Scored
from vlmforge.evaluate.benchmarks.vqav2 import VqaReference


def test_vqav2_right_answers_score_one() -> None:
    from vlmforge.evaluate.vqa_accuracy import normalize_vqa_answer

    references = [
        VqaReference(["red"] * 6 + ["white"] * 4, "other"),
        VqaReference(["yes"] * 10, "yes/no"),
        VqaReference(["1"] * 9 + ["one"], "number"),
    ]
    answers = [normalize_vqa_answer(text) for text in ("Red.", "Yes", "One")]
    assert answers == ["red", "yes", "1"]
    assert vqav2.score(answers, references) == {
        "accuracy": 1.0,
        "accuracy_other": 1.0,
        "accuracy_yes_no": 1.0,
        "accuracy_number": 1.0,
    }
    assert vqav2.score(["blue", "no", "2"], references)["accuracy"] == 0.0


def test_question_prompt_is_llavas() -> None:
    # LLaVA-1.5's short-answer prompt (llava/eval/model_vqa_loader.py, VQAv2/POPE question files): the image
    # first, the question, the instruction on its own line
    expected = "<image>\nWhat is it?\nAnswer the question using a single word or phrase."
    assert question_prompt("What is it?", SHORT_ANSWER) == expected
    assert question_prompt("Where is the cat?", "") == "<image>\nWhere is the cat?"


def test_vqav2_submission_is_the_servers_format() -> None:
    # the evaluation server's results format (visualqa.org/evaluation: [{"question_id": int, "answer": str}])
    assert vqav2.submission([420, 70], ["red", "1"]) == [
        {"question_id": 420, "answer": "red"},
        {"question_id": 70, "answer": "1"},
    ]


def test_pope_right_answers_score_one() -> None:
    metrics = pope.score(["Yes, there is a person.", "No, there is no dog.", "Yes"], ["yes", "no", "yes"])
    assert metrics["accuracy"] == metrics["precision"] == metrics["recall"] == metrics["f1"] == 1.0
    assert metrics["yes_ratio"] == pytest.approx(2 / 3)


def _rounds(key: str, category: str, hits: list[bool]) -> list[Scored]:
    return [Scored(key, r, category, "A" if hit else "B", "A") for r, hit in enumerate(hits)]


def test_multiple_choice_first_pass_and_circular() -> None:
    scored = _rounds("1", "ocr", [True, True, True]) + _rounds("2", "scene", [True, False, True, True])
    metrics = multiple_choice.score(scored, circular=True)
    assert metrics["accuracy"] == 1.0  # both right with the options in file order
    assert metrics["accuracy_by_category"] == {"ocr": 1.0, "scene": 1.0}
    assert metrics["circular_accuracy"] == 0.5  # question 2 missed one rotation
    assert metrics["circular_accuracy_by_category"] == {"ocr": 1.0, "scene": 0.0}
    assert "circular_accuracy" not in multiple_choice.score(scored[:1], circular=False)


def test_multiple_choice_rounds_rotate_the_options() -> None:
    question = multiple_choice.ChoiceQuestion("7", "Q?", ["a", "b", "c"], 2, "cat", b"")
    assert multiple_choice.rounds(question, circular=False) == [(["a", "b", "c"], 2)]
    assert multiple_choice.rounds(question, circular=True) == [
        (["a", "b", "c"], 2),
        (["b", "c", "a"], 1),
        (["c", "a", "b"], 0),
    ]


def test_refcoco_padded_square_layout() -> None:
    # expand2square (LLaVA llava/mm_utils.py) pastes a wide image at (0, (w - h) // 2), a tall one at
    # ((h - w) // 2, 0) on a max(w, h) square
    assert refcoco.padding(72, 48) == (72, 0, 12)
    assert refcoco.padding(48, 65) == (65, 8, 0)
    assert refcoco.padding(40, 40) == (40, 0, 0)
    box = (20.0, 6.0, 50.0, 34.0)
    fractions = refcoco.to_square_fractions(box, (72, 48))
    assert fractions == pytest.approx((20 / 72, 18 / 72, 50 / 72, 46 / 72))
    assert refcoco.from_square_fractions(fractions, (72, 48)) == pytest.approx(box)


def test_refcoco_pad_to_square_keeps_the_image() -> None:
    from PIL import Image

    image = Image.new("RGB", (6, 4), (200, 10, 10))
    square = refcoco.pad_to_square(image, (1, 2, 3))
    assert square.size == (6, 6)
    assert square.getpixel((0, 0)) == (1, 2, 3) == square.getpixel((5, 5))  # the padding rows
    assert square.crop((0, 1, 6, 5)).tobytes() == image.tobytes()


def test_refcoco_right_box_scores_one() -> None:
    from vlmforge.evaluate.grounding_metrics import parse_box

    truth = [(20.0, 6.0, 50.0, 34.0), (4.0, 14.0, 44.0, 50.0)]
    sizes = [(72, 48), (48, 64)]
    texts = [
        "[{:.4f}, {:.4f}, {:.4f}, {:.4f}]".format(*refcoco.to_square_fractions(box, size))
        for box, size in zip(truth, sizes, strict=True)
    ]
    parsed = [parse_box(text) for text in texts]
    predicted = [refcoco.from_square_fractions(p, size) for p, size in zip(parsed, sizes, strict=True) if p]
    metrics = refcoco.score(predicted, truth, threshold=0.5)
    assert metrics["accuracy@0.5"] == 1.0 and metrics["mean_iou"] == pytest.approx(1.0, abs=1e-3)
    assert refcoco.score([None, predicted[1]], truth, threshold=0.5)["accuracy@0.5"] == 0.5
