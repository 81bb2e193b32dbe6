"""Multiple-choice and hallucination metrics as pure functions: MMBench's rule-based answer matching and
CircularEval (Liu et al. 2023), and POPE's yes/no scoring (Li et al. 2023)."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Answers VLMEvalKit reads as a refusal (its option code "Z"): they name no option, and no option text is
# looked for in them.
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_REFUSAL_LETTER = "Z"
_LETTER_MARKS = re.compile(r"[.()\[\],:;!*#{}]")
_LAST_WORDS = 4  # a lone letter names the option only among the answer's last 4 words


def parse_choice(text: str, letters: Sequence[str], options: Sequence[str] | None = None) -> str | None:
    """The option letter a free-form answer names, or None when it names none or several, as MMBench's
    rule-based matching decides (VLMEvalKit, vlmeval/utils/matching_util.py ``can_infer`` at 590f052a).

    First the letter: punctuation ``.()[],:;!*#{}`` becomes spaces; exactly one of ``letters`` among the
    words, and among the last four, is the answer. Otherwise, given ``options`` (the texts of ``letters``, in
    order), the one option whose lower-cased text occurs in the lower-cased answer, if the answer is at most
    twice as long as all option texts together. Refusals (and a lone "Z") name nothing. Left out: the
    chain-of-thought "answer is X" pattern VLMEvalKit added later, which also reads "the answer is a dog"
    as option A.
    """
    if any(refusal in text for refusal in _REFUSALS):
        return None
    words = _LETTER_MARKS.sub(" ", text).split()
    named = [letter for letter in dict.fromkeys(letters) if letter in words]
    if len(named) == 1 and words.index(named[0]) >= len(words) - _LAST_WORDS:
        return named[0]
    if not named and _REFUSAL_LETTER in words:
        return None
    return None if options is None else _option_named_by_text(text, letters, options)


def _option_named_by_text(text: str, letters: Sequence[str], options: Sequence[str]) -> str | None:
    """VLMEvalKit's ``can_infer_text``: the single option whose text the answer contains."""
    answer = text.lower()
    if len(answer) > 2 * sum(len(option) for option in options):
        return None
    named = [letter for letter, option in zip(letters, options, strict=True) if option.lower() in answer]
    return named[0] if len(named) == 1 else None


def multiple_choice_accuracy(predicted: Sequence[str | None], answers: Sequence[str]) -> float:
    """Fraction of questions whose predicted letter is the answer (None, no option named, is wrong)."""
    hits = [p == a for p, a in zip(predicted, answers, strict=True)]
    return sum(hits) / len(hits) if hits else 0.0


def circular_options(options: Sequence[str], answer: int) -> list[tuple[list[str], int]]:
    """The N passes of an N-option question in MMBench's CircularEval (Liu et al. 2023, §3.2): the options
    shifted by 0..N-1 places (pass 1 of A,B,C,D shows B,C,D,A), each with the answer's new index."""
    count = len(options)
    if not 0 <= answer < count:
        raise ValueError(f"answer index {answer} is not one of the {count} options")
    return [
        ([options[(j + shift) % count] for j in range(count)], (answer - shift) % count)
        for shift in range(count)
    ]


def circular_accuracy(question_ids: Sequence[str | int], correct: Sequence[bool]) -> float:
    """CircularEval accuracy (Liu et al. 2023, §3.2): the fraction of questions answered correctly in every
    one of their passes (rows sharing a question id)."""
    solved: dict[str | int, bool] = {}
    for question, hit in zip(question_ids, correct, strict=True):
        solved[question] = solved.get(question, True) and bool(hit)
    return sum(solved.values()) / len(solved) if solved else 0.0


def pope_answer(text: str) -> str:
    """ "yes" or "no" as POPE's evaluate.py (AoiDragon/POPE) reads an answer: its first sentence (up to the
    first period), commas dropped, split on single spaces; "No", "not" or "no" among the words means "no"
    (case and punctuation count: "NO" and "No!" read as "yes")."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if any(word in words for word in ("No", "not", "no")) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE's metrics (Li et al. 2023; AoiDragon/POPE evaluate.py) with "yes" positive: accuracy,
    precision, recall, f1 and the fraction of "yes" answers. ``predictions`` are free-form answers read by
    ``pope_answer``; a label other than "no" is positive, as there. Where evaluate.py divides by zero (no
    "yes" predicted or labelled, or both ratios 0) the ratio is 0 here."""
    said_yes = [pope_answer(p) == "yes" for p in predictions]
    is_yes = [label != "no" for label in labels]
    pairs = list(zip(said_yes, is_yes, strict=True))
    true_pos = sum(p and t for p, t in pairs)
    true_neg = sum(not p and not t for p, t in pairs)
    precision = _ratio(true_pos, sum(said_yes))
    recall = _ratio(true_pos, sum(is_yes))
    return {
        "accuracy": _ratio(true_pos + true_neg, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(sum(said_yes), len(pairs)),
    }


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
