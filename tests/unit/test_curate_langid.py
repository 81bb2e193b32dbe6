"""The curate `language` step on short captions: the shipped recipe's settings on the labelled set
(tests/data/langid_captions.jsonl, hand-written; see tests/data/README.md), the decision rule, and the
step's recipe fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.curate_pool import chunk_of, recipe_of
from vlmforge.config.load import load_recipe, read_yaml
from vlmforge.config.shipped import find_recipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Table
from vlmforge.curate.langid import language_reasons
from vlmforge.curate.steps import build_steps
from vlmforge.errors import UserError

CAPTIONS = Path(__file__).resolve().parents[1] / "data" / "langid_captions.jsonl"
SHIPPED = find_recipe("curate/datacomp-metaclip")


def shipped_language_step() -> dict[str, Any]:
    (step,) = [s for s in read_yaml(SHIPPED)["steps"] if s["kind"] == "language"]
    return step


def decide(tmp_path: Path, step: dict[str, Any], captions: list[str]) -> Any:
    recipe = recipe_of(tmp_path, [step])
    (language,) = build_steps(recipe, Resources(recipe))
    chunk = chunk_of([Image.new("RGB", (8, 8))] * len(captions), captions)
    columns = language.measure(Batch(chunk, np.arange(len(captions))))
    return language.apply(Table(np.array(chunk.keys), columns))


def test_the_shipped_language_step_keeps_short_english_and_drops_other_languages(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines()]
    langs = np.array([r["lang"] for r in rows])
    english = langs == "en"
    assert len(rows) >= 400 and len(set(langs)) >= 10 and english.mean() >= 0.4  # the set's stated shape
    decision = decide(tmp_path, shipped_language_step(), [r["text"] for r in rows])
    assert decision.keep[english].mean() >= 0.99
    assert (~decision.keep[~english]).mean() >= 0.95
    assert set(decision.reason[~decision.keep]) <= {"other_language", "uncertain_language"}
    # the rule it replaces (fastText's top score >= 0.5) kept 82% of this English
    assert (decision.scores["lang_score"][english] < 0.5).mean() > 0.1


def test_langid_vouches_ratio_and_floor_decide_in_that_order() -> None:
    kept = np.array([0.05, 0.05, 0.3, 0.2, 0.05, 0.3, 0.3])
    other = np.array([0.9, 0.9, 0.5, 0.9, 0.01, 0.5, 0.5])
    langid = np.array(["en", "de", "", "", "", "zxx", "de"])
    reasons = language_reasons(kept, other, langid, ["en"], min_ratio=0.5, min_score=0.1)
    assert reasons.tolist() == [
        "",  # langid.py ranks English first: kept whatever fastText says
        "other_language",  # 0.05 < 0.5 x 0.9
        "",  # 0.3 >= 0.5 x 0.5 and >= 0.1, langid.py not asked
        "other_language",  # 0.2 < 0.5 x 0.9
        "uncertain_language",  # ahead of the rest but below the 0.1 floor
        "uncertain_language",  # langid.py: no linguistic content
        "",  # langid.py prefers another language; fastText alone decides
    ]


def test_fasttext_alone_never_asks_langid(tmp_path: Path) -> None:
    captions = ["a red circle on a dark background", "xqzv blorft mnekj wqpx zzkt", ""]
    alone = decide(tmp_path, {"kind": "language", "model": "fasttext"}, captions)
    both = decide(tmp_path, {"kind": "language"}, captions)
    assert alone.keep[0] and both.keep[0]
    assert both.reason[1] == "uncertain_language"  # langid.py: zxx
    assert alone.reason[2] == both.reason[2] == "uncertain_language"  # nothing to read


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "lingua", r"steps\.language\.model"),
        ("min_ratio", -0.1, r"steps\.language\.min_ratio"),
        ("min_score", 1.5, r"steps\.language\.min_score"),
    ],
)
def test_bad_language_fields_name_the_field(tmp_path: Path, field: str, value: Any, message: str) -> None:
    base = {
        "name": "t",
        "input": {"kind": "webdataset", "shards": "x.tar"},
        "output": str(tmp_path / "out"),
        "steps": [{"kind": "language", field: value}],
    }
    with pytest.raises(UserError, match=message):
        load_recipe("curate", None, base=base)
