"""The captioning metrics against the COCO caption evaluation (pycocoevalcap).

tests/data/coco_caption_reference.json was computed once with pycocoevalcap 1.2 (pip; the Python 3 port of
github.com/tylin/coco-caption): its PTBTokenizer (stanford-corenlp-3.4.1.jar under OpenJDK 17) tokenised 45
captions of 12 images, then Bleu(4), Meteor (meteor-1.5.jar), Rouge and Cider scored them as
pycocoevalcap/eval.py does; the file's "provenance" says how. The live test re-runs pycocoevalcap where it and
java are installed.
"""

from __future__ import annotations

import json
import random
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from vlmforge.evaluate import caption_metrics
from vlmforge.evaluate.caption_metrics import bleu, caption_scores, cider_d, rouge_l
from vlmforge.evaluate.meteor import meteor
from vlmforge.evaluate.ptb_tokenizer import ptb_tokenize

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "data" / "coco_caption_reference.json").read_text("utf-8")
)
SETS = REFERENCE["sets"]
HAVE_COCO = find_spec("pycocoevalcap") is not None and shutil.which("java") is not None
needs_coco = pytest.mark.skipif(
    not HAVE_COCO,
    reason="METEOR and the live comparison need pycocoevalcap (captions extra) and java on PATH",
)
TOLERANCE = 1e-9


def _tokens(tokenised: str) -> list[str]:
    return tokenised.split(" ") if tokenised else []


def _captions(name: str) -> tuple[list[dict[str, Any]], list[str], list[list[str]]]:
    images = SETS[name]["images"]
    return (
        images,
        [im["candidate"]["text"] for im in images],
        [[ref["text"] for ref in im["references"]] for im in images],
    )


def _java_tokens(name: str) -> tuple[list[list[str]], list[list[list[str]]]]:
    images = SETS[name]["images"]
    candidates = [_tokens(im["candidate"]["tokens"]) for im in images]
    references = [[_tokens(ref["tokens"]) for ref in im["references"]] for im in images]
    return candidates, references


@pytest.mark.parametrize("name", sorted(SETS))
def test_ptb_tokenize_equals_the_java_tokenizer(name: str) -> None:
    captions = [caption for im in SETS[name]["images"] for caption in [im["candidate"], *im["references"]]]
    assert captions
    for caption in captions:
        assert ptb_tokenize(caption["text"]) == _tokens(caption["tokens"]), caption["text"]


def test_ptb_tokenize_on_hard_cases_equals_the_java_tokenizer() -> None:
    cases = REFERENCE["tokenizer_cases"]
    assert len(cases) >= 80
    for case in cases:
        assert ptb_tokenize(case["text"]) == _tokens(case["tokens"]), case["text"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_metrics_on_the_java_tokens_equal_pycocoevalcap(name: str) -> None:
    expected = SETS[name]["scores"]
    candidates, references = _java_tokens(name)
    for key, value in bleu(candidates, references).items():
        assert value == pytest.approx(expected[key], abs=TOLERANCE, rel=1e-9), key
    assert rouge_l(candidates, references) == pytest.approx(expected["ROUGE_L"], abs=TOLERANCE)
    assert cider_d(candidates, references) == pytest.approx(expected["CIDEr"], abs=TOLERANCE)


def test_bleu4_is_smoothed_not_zero_without_matching_4grams() -> None:
    candidates, references = _java_tokens("no_matching_4grams")
    score = bleu(candidates, references)["Bleu_4"]
    assert 0 < score < 1e-6
    assert score == pytest.approx(SETS["no_matching_4grams"]["scores"]["Bleu_4"], rel=1e-9)


@pytest.mark.parametrize("name", sorted(SETS))
def test_caption_scores_on_raw_captions_equal_pycocoevalcap(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caption_metrics, "meteor_unavailable_reason", lambda: "METEOR is checked below")
    _, candidates, references = _captions(name)
    scores = caption_scores(candidates, references)
    expected = SETS[name]["scores"]
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert scores[key] == pytest.approx(expected[key], abs=TOLERANCE, rel=1e-9), key


@needs_coco
@pytest.mark.slow  # the METEOR jar loads its paraphrase table once (10-25 s)
def test_meteor_equals_the_stored_values() -> None:
    for name, data in SETS.items():
        candidates, references = _java_tokens(name)
        assert meteor(candidates, references) == pytest.approx(data["scores"]["METEOR"], abs=1e-9), name
        _, raw_candidates, raw_references = _captions(name)
        scores = caption_scores(raw_candidates, raw_references)
        assert scores["METEOR"] == pytest.approx(data["scores"]["METEOR"], abs=1e-9), name


def test_caption_scores_reports_why_meteor_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    scores = caption_scores(["a dog runs"], [["a dog is running"]])
    assert "METEOR" not in scores
    assert "java is not on PATH" in str(scores["METEOR_unavailable"])
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR_unavailable", "ROUGE_L", "CIDEr"}


@needs_coco
def test_live_pycocoevalcap_on_random_captions() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    pool = [caption["text"] for im in SETS["realistic"]["images"] for caption in im["references"]]
    rng = random.Random(7)
    references = [rng.sample(pool, rng.randint(2, 5)) for _ in range(6)]
    candidates = [rng.choice(pool).replace("a ", "the ", 1) for _ in range(6)]
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    for i, candidate in enumerate(candidates):
        assert " ".join(ptb_tokenize(candidate)) == res[i][0]
    expected = dict(
        zip(
            ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"],
            Bleu(4).compute_score(gts, res, verbose=0)[0],
            strict=True,
        )
    )
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    scores = caption_scores(candidates, references)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=TOLERANCE), key
