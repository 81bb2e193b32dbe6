"""Multiple-choice and POPE metrics against their official code.

tests/data/choice_reference_cases.json holds values computed once with VLMEvalKit's can_infer
(open-compass/VLMEvalKit, vlmeval/utils/matching_util.py at 590f052a96c47b1b52ca0d6ce7fa110e47a945f5) and
POPE's evaluate.py (AoiDragon/POPE at 08d957b917e5a378a2f99d35b6293c536a66298b); its "provenance" says how.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmforge.evaluate.choice_metrics import (
    circular_accuracy,
    circular_options,
    multiple_choice_accuracy,
    parse_choice,
    pope_answer,
    pope_metrics,
)

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "choice_reference_cases.json").read_text())
POPE_CASES = REFERENCE["pope_cases"]


@pytest.mark.parametrize("case", REFERENCE["choice_cases"], ids=lambda c: repr(c["text"]))
def test_parse_choice_matches_vlmevalkit(case: dict) -> None:
    assert parse_choice(case["text"], case["letters"], case["options"]) == case["choice"]


@pytest.mark.parametrize("case", POPE_CASES, ids=lambda c: repr(c["text"]))
def test_pope_answer_matches_official(case: dict) -> None:
    assert pope_answer(case["text"]) == case["pope_answer"]


@pytest.mark.parametrize("subset", ["all", "first_16"])
def test_pope_metrics_match_official(subset: str) -> None:
    cases = POPE_CASES if subset == "all" else POPE_CASES[:16]
    ours = pope_metrics([c["text"] for c in cases], [c["label"] for c in cases])
    assert ours == pytest.approx(REFERENCE["pope_metrics"][subset], abs=1e-12)


def test_pope_metrics_without_positives_are_zero_not_an_error() -> None:
    # evaluate.py raises ZeroDivisionError here. Both answers read "no", both labels are "no":
    # 2 true negatives, no positives.
    assert pope_metrics(["No.", "no"], ["no", "no"]) == {
        "accuracy": 1.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "yes_ratio": 0.0,
    }


def test_multiple_choice_accuracy_counts_none_as_wrong() -> None:
    assert multiple_choice_accuracy(["A", None, "C", "B"], ["A", "B", "C", "D"]) == 0.5
    assert multiple_choice_accuracy([], []) == 0.0


def test_circular_options_rotate_and_track_the_answer() -> None:
    passes = circular_options(["cat", "dog", "bird", "fish"], answer=1)
    assert passes == [
        (["cat", "dog", "bird", "fish"], 1),
        (["dog", "bird", "fish", "cat"], 0),
        (["bird", "fish", "cat", "dog"], 3),
        (["fish", "cat", "dog", "bird"], 2),
    ]
    assert all(options[answer] == "dog" for options, answer in passes)
    with pytest.raises(ValueError, match="not one of the 2 options"):
        circular_options(["yes", "no"], answer=2)


def test_circular_accuracy_needs_every_pass_right() -> None:
    ids = [7, 7, 7, 8, 8, "x"]
    assert circular_accuracy(ids, [True, True, True, True, False, True]) == 2 / 3
    assert circular_accuracy(ids, [True, False, True, True, True, False]) == 1 / 3
    assert circular_accuracy([], []) == 0.0
