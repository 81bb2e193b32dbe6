"""VQA accuracy (Antol et al. 2015), reimplementing the official VQA v2 evaluation: GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py, including its quirks (answers are only normalised when the
annotators disagree; at most 32 periods are stripped, since ``re.UNICODE`` lands in ``re.sub``'s count)."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Data: the ``contractions`` table of vqaEval.py, entry for entry (its capitalised keys never match, since
# words are looked up lower-cased, and "somebody'd" really maps to "somebodyd" there).
# fmt: off
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# fmt: on
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'  # vqaEval.py's punct: ':' and "'" are kept
# vqaEval.py's periodStrip is "(?!<=\d)(\.)(?!\d)": its "(?!<=" is a lookahead, not a lookbehind, so every
# period not followed by a digit goes ("5." -> "5", "3.5" stays).
_PERIOD = re.compile(r"\.(?!\d)")
_PERIODS_STRIPPED = 32  # vqaEval.py passes re.UNICODE (== 32) as periodStrip.sub's count
_COMMA_IN_NUMBER = re.compile(r"\d,\d")


def _clean(answer: str) -> str:
    """Newlines and tabs as spaces, outer whitespace stripped: what vqaEval.py does to every answer."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """vqaEval.py's processPunctuation: a mark next to a space (or any mark, once the text has a comma
    inside a number such as "1,000") is deleted, otherwise it becomes a space; then periods go."""
    joined = _COMMA_IN_NUMBER.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        spaced = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if spaced or joined else " ")
    return _PERIOD.sub("", out, count=_PERIODS_STRIPPED)


def _process_digit_article(text: str) -> str:
    """vqaEval.py's processDigitArticle: lower-cased words, number words as digits, articles dropped,
    contractions given their apostrophe."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """An answer as the official VQA v2 evaluation compares it (vqaEval.py: newline/tab cleanup, then
    processPunctuation and processDigitArticle)."""
    return _process_digit_article(_process_punctuation(_clean(answer)))


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """Official VQA accuracy of one answer, 0-1 (vqaEval.py, GT-Vision-Lab/VQA): min(1, #other references
    equal to it / 3), averaged over the references left out in turn.

    As in vqaEval.py, answers are compared as given (only newlines, tabs and outer spaces cleaned) when all
    references are identical, and normalised (``normalize_vqa_answer``) only when they differ, so "Yes"
    scores 0 against ten "yes". The formula caps what few references allow: 2 identical references give
    at most 1/3, 3 give 2/3, 4 or more can give 1. A single reference, where the formula is always 0,
    instead scores 1 when the normalised prediction equals the normalised reference, else 0.
    """
    if isinstance(references, str):
        raise TypeError("vqa_accuracy takes a sequence of reference answers, not one string")
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    if len(references) == 1:
        return float(normalize_vqa_answer(prediction) == normalize_vqa_answer(references[0]))
    answer, truths = _clean(prediction), [_clean(reference) for reference in references]
    if len(set(truths)) > 1:
        answer, truths = normalize_vqa_answer(answer), [normalize_vqa_answer(truth) for truth in truths]
    scores = [
        min(1.0, sum(truth == answer for j, truth in enumerate(truths) if j != left_out) / 3)
        for left_out in range(len(truths))
    ]
    return sum(scores) / len(scores)


def vqa_score(
    predictions: Sequence[str], references: Sequence[Sequence[str]], answer_types: Sequence[str] | None = None
) -> dict[str, float]:
    """Mean ``vqa_accuracy`` over questions, 0-1 (the official script prints 100x this, rounded to 2
    decimals), plus ``accuracy_<type>`` per answer type when ``answer_types`` is given ("yes/no" ->
    ``accuracy_yes_no``, "number", "other"). No questions score 0."""
    scores = [vqa_accuracy(p, r) for p, r in zip(predictions, references, strict=True)]
    out = {"accuracy": _mean(scores)}
    if answer_types is not None:
        by_type: dict[str, list[float]] = {}
        for answer_type, score in zip(answer_types, scores, strict=True):
            by_type.setdefault(answer_type, []).append(score)
        for answer_type, group in by_type.items():
            out[f"accuracy_{_type_key(answer_type)}"] = _mean(group)
    return out


def _type_key(answer_type: str) -> str:
    return re.sub(r"\W+", "_", answer_type).strip("_")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
