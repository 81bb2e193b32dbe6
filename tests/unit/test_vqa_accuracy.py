"""VQA accuracy against the official VQA v2 evaluation.

tests/data/vqa_reference_cases.json holds values computed once with GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit a013f0043c1e2cdc995922dfe257f7149aa9af06
(VQAEval.evaluate() under Python 3.11, only its print statements ported; see the file's "provenance").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmforge.evaluate.vqa_accuracy import normalize_vqa_answer, vqa_accuracy, vqa_score

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "vqa_reference_cases.json").read_text())
ACCURACY_CASES = REFERENCE["accuracy_cases"]


def test_reference_file_names_its_source() -> None:
    assert REFERENCE["provenance"]["repo"] == "GT-Vision-Lab/VQA"
    assert len(ACCURACY_CASES) >= 40


@pytest.mark.parametrize("case", REFERENCE["normalization_cases"], ids=lambda c: repr(c["answer"]))
def test_normalization_matches_official(case: dict) -> None:
    assert normalize_vqa_answer(case["answer"]) == case["normalized"]


@pytest.mark.parametrize("case", ACCURACY_CASES, ids=lambda c: f"{c['prediction']!r}-{c['references'][:2]}")
def test_accuracy_matches_official(case: dict) -> None:
    assert vqa_accuracy(case["prediction"], case["references"]) == pytest.approx(case["accuracy"], abs=1e-12)


def test_score_matches_official_summary() -> None:
    cases = REFERENCE["accuracy_cases"]
    score = vqa_score(
        [c["prediction"] for c in cases], [c["references"] for c in cases], [c["answer_type"] for c in cases]
    )
    official = {  # VQAEval.accuracy's answer types -> our keys
        "overall": "accuracy",
        "yes/no": "accuracy_yes_no",
        "number": "accuracy_number",
        "other": "accuracy_other",
    }
    assert round(100 * score["accuracy"], 2) == REFERENCE["summary"]["overall"]
    for answer_type, value in REFERENCE["summary"]["per_answer_type"].items():
        assert round(100 * score[official[answer_type]], 2) == value
    assert set(score) == set(official.values())


def test_single_reference_scores_normalized_equality() -> None:
    # vqaEval.py's formula gives 0 for any answer against a single reference (nothing is left to match).
    assert vqa_accuracy("cat", ["cat"]) == 1.0
    assert vqa_accuracy("The Two cats.", ["2 cats"]) == 1.0
    assert vqa_accuracy("Yes", ["yes"]) == 1.0
    assert vqa_accuracy("dogs", ["dog"]) == 0.0


def test_score_without_types_and_empty() -> None:
    # By vqaEval.py's formula: "2" matches one other of ["two", "2"] (normalised, as they differ) whichever is
    # left out, 1/3; "no" matches none of four "yes".
    assert vqa_score(["2", "no"], [["two", "2"], ["yes"] * 4]) == {"accuracy": (1 / 3 + 0.0) / 2}
    assert vqa_score([], []) == {"accuracy": 0.0}


def test_bad_references_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("cat", [])
    with pytest.raises(TypeError, match="not one string"):
        vqa_accuracy("cat", "cat")
