"""Interleaved documents: the shard format round-trips and is reproducible, unreadable documents are
counted, the ROOTS/OBELICS text measures match the reference implementation, MinHash estimates Jaccard,
and document-level curation of the demo corpus catches each planted problem and accounts for every
document, image and paragraph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vlmforge.config.interleaved import DocumentCuration
from vlmforge.curate.documents import curate_documents
from vlmforge.curate.minhash import jaccard_estimate, permutations, shingles, signature
from vlmforge.curate.textstats import (
    character_repetition_ratio,
    special_character_ratio,
    text_words,
    word_repetition_ratio,
)
from vlmforge.data.interleaved import Document, Picture, read_documents, write_documents
from vlmforge.data.interleaved_demo import DemoCorpus, make_corpus

# Reference values: huggingface/OBELICS obelics/processors/web_document_filtering.py (commit 334adfd),
# FilteringFunctions.compute_character_repetition_ratio (n=10), compute_word_repetition_ratio (n=5),
# compute_special_character_ratio and get_words_from_text, ported to a scratch script with the special
# characters string.punctuation + string.digits + string.whitespace and run on these texts.
OBELICS_REFERENCE = [
    (
        "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat, and then it slept.",
        0.2222222222222222,
        0.7777777777777778,
        0.2777777777777778,
    ),
    ("buy now " * 30, 0.2510822510822511, 1.0, 0.25),
    ("Digits (0-9) were scanned at 8x8 pixels; volunteers wrote them on forms in 1998!", 0.0, 0.0, 0.325),
]
OBELICS_WORDS = [
    "digits",
    "were",
    "scanned",
    "at",
    "x",
    "pixels",
    "volunteers",
    "wrote",
    "them",
    "on",
    "forms",
    "in",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    return make_corpus(tmp_path_factory.mktemp("interleaved"))


@pytest.fixture(scope="module")
def curated(corpus: DemoCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("curated-docs")
    curate_documents([str(p) for p in corpus.shards], output, DocumentCuration())
    return output


@pytest.mark.parametrize(("text", "chars", "words", "special"), OBELICS_REFERENCE)
def test_text_measures_match_obelics(text: str, chars: float, words: float, special: float) -> None:
    assert character_repetition_ratio(text, 10) == pytest.approx(chars, abs=1e-12)
    assert word_repetition_ratio(text, 5) == pytest.approx(words, abs=1e-12)
    assert special_character_ratio(text) == pytest.approx(special, abs=1e-12)


def test_words_are_split_and_stripped_as_obelics_does() -> None:
    assert text_words(OBELICS_REFERENCE[2][0]) == OBELICS_WORDS


def test_minhash_estimates_the_jaccard_similarity_of_word_shingles() -> None:
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(400)]
    a, b = permutations(256, seed=3)
    for changed in (2, 20, 80):
        words = [str(w) for w in rng.choice(vocabulary, 200)]
        other = list(words)
        for i in rng.choice(200, changed, replace=False):
            other[int(i)] = "changed"
        x, y = shingles(words), shingles(other)
        exact = len(x & y) / len(x | y)
        estimate = jaccard_estimate(signature(x, a, b), signature(y, a, b))
        assert abs(estimate - exact) < 0.1, (changed, exact, estimate)  # 256 hashes: std <= 0.032


def test_documents_round_trip_and_shards_are_reproducible(tmp_path: Path) -> None:
    doc = Document(
        "page-1",
        ["first paragraph", None, "second paragraph"],
        [None, Picture(b"\x89PNG fake", "png", {"similarity": 0.25}), None],
        {"url": "https://example.org"},
    )
    first = write_documents(tmp_path / "a.tar", [doc])
    assert write_documents(tmp_path / "b.tar", [doc]) == first
    (back,) = list(read_documents(tmp_path / "a.tar"))
    assert (back.key, back.texts, back.meta) == (doc.key, doc.texts, doc.meta)
    assert back.images[1] == doc.images[1] and back.images[0] is None and back.images[2] is None


def test_unreadable_documents_are_counted_not_skipped(corpus: DemoCorpus, tmp_path: Path) -> None:
    errors = {d.key: d.error for p in corpus.shards for d in read_documents(p) if d.error}
    assert errors == {"bad-10": "bad_json", "bad-11": "missing_image"}
    cut = tmp_path / "cut.tar"
    data = corpus.shards[0].read_bytes()
    for size in (len(data) // 2, len(data) // 3 + 700):  # mid-member, or between a JSON and its images
        cut.write_bytes(data[:size])
        docs = list(read_documents(cut))
        assert docs[-1].error in ("truncated", "missing_image") and all(not d.error for d in docs[:-1])


def test_curation_drops_and_removes_each_planted_problem_and_accounts_for_everything(
    corpus: DemoCorpus, curated: Path
) -> None:
    report = json.loads((curated / "report.json").read_text())
    dropped = {
        (r := json.loads(line))["key"]: (r["stage"], r["reason"])
        for line in (curated / "dropped.jsonl").open()
    }
    assert dropped == corpus.planted  # every planted document, by its stage and reason; nothing else
    removed: dict[str, list[tuple[int, str, str]]] = {}
    for line in (curated / "removed.jsonl").open():
        row = json.loads(line)
        removed.setdefault(row["key"], []).append((row["node"], row["kind"], row["reason"]))
    assert {k: sorted(v) for k, v in removed.items()} == {k: sorted(v) for k, v in corpus.removed.items()}
    assert report["total"] == len(corpus.keys) and report["kept"] == len(corpus.keys) - len(corpus.planted)
    expected = report["total"]
    for stage in report["stages"]:
        assert stage["in"] == expected == stage["out"] + sum(stage["dropped"].values())
        expected = stage["out"]
    for kind in ("images", "paragraphs"):
        nodes = report[kind]
        assert nodes["in"] == nodes["kept"] + sum(nodes["removed"].values()) + nodes["with_dropped_document"]
    kept = [d for s in sorted((curated / "shards").glob("*.tar")) for d in read_documents(s)]
    assert [d.key for d in kept] == [k for k in corpus.keys if k not in corpus.planted]
    assert sum(len(d.pictures) for d in kept) == report["images"]["kept"]
    logo_free = next(d for d in kept if d.key == "doc-0000")
    assert len(logo_free.pictures) == 2 and len(logo_free.paragraphs) == 3  # the logo node is gone


def test_curation_is_reproducible(corpus: DemoCorpus, curated: Path, tmp_path: Path) -> None:
    again = curate_documents([str(p) for p in corpus.shards], tmp_path / "again", DocumentCuration())
    first = json.loads((curated / "report.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]
    relaxed = DocumentCuration.model_validate(
        {"near_duplicate_jaccard": 1.0, "images": {"max_documents": 20}}
    )
    loose = curate_documents([str(p) for p in corpus.shards], tmp_path / "loose", relaxed)
    assert loose["stages"][3]["dropped"] == {} and "repeated_image" not in loose["images"]["removed"]
    shutil.rmtree(tmp_path / "loose")
