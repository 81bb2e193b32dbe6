"""MMC4-style image assignment: the matching is the maximum-weight one (checked against every injective
map), the similarity threshold holds, constructed embeddings put each known image after its sentence,
and a corpus retrofitted with a (random, tiny) open_clip scorer stores the similarity its towers give."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.curate_pool import DIGIT_NAMES, digit_image
from vlmforge.config.curate_models import OpenClipScorer
from vlmforge.curate.assign import Pool, assign_images, retrofit, retrofit_corpus, sentences
from vlmforge.curate.scorers import load_scorer
from vlmforge.data.interleaved import Document, read_documents, write_documents


def best_matching(similarity: np.ndarray) -> float:
    """The largest total weight over every one-to-one map of the smaller side into the larger."""
    s, i = similarity.shape
    if s <= i:
        return max(
            sum(similarity[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(i), s)
        )
    return max(sum(similarity[r, c] for c, r in enumerate(p)) for p in itertools.permutations(range(s), i))


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 5)])
def test_assignment_is_the_maximum_weight_matching(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        similarity = rng.uniform(-0.2, 0.6, shape)
        pairs = assign_images(similarity, min_similarity=-1.0)
        assert len(pairs) == min(shape)
        assert len({p[0] for p in pairs}) == len({p[1] for p in pairs}) == len(pairs)  # one-to-one
        assert sum(p[2] for p in pairs) == pytest.approx(best_matching(similarity))


def test_the_matching_is_not_greedy_and_the_threshold_drops_weak_pairs() -> None:
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])  # greedy takes (0, 0) and is left with 0.1
    assert assign_images(similarity, 0.0) == [(0, 1, 0.8), (1, 0, 0.85)]
    assert assign_images(similarity, 0.82) == [(1, 0, 0.85)]
    assert assign_images(np.zeros((0, 3)), 0.0) == []


def test_each_known_image_follows_its_sentence(tmp_path: Path) -> None:
    """Sentence k's embedding is axis k; pool image j is axis perm[j] (plus a decoy on no axis), so the
    right image of every sentence is known."""
    doc = Document(
        "d", ["Zero is round. One is a line! Two has a curve?", "Three has two bumps."], [None, None]
    )
    assert sentences(doc) == ["Zero is round.", "One is a line!", "Two has a curve?", "Three has two bumps."]
    perm = [2, 0, 3, 1]
    files = []
    for j in range(5):
        files.append(tmp_path / f"img{j}.png")
        files[-1].write_bytes(f"image {j}".encode())
    axes = np.eye(5, dtype=np.float32)
    pool = Pool(
        [f.name for f in files], files, np.stack([axes[k] for k in perm] + [np.full(5, 0.1, np.float32)])
    )
    noisy = axes[:4] + 0.05
    texts = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    out = retrofit(doc, texts, pool, min_similarity=0.5, count=5)
    assert [t is not None for t in out.texts] == [True, False] * 4
    for k in range(4):
        picture = out.images[2 * k + 1]
        assert picture is not None and picture.meta["image"] == f"img{perm.index(k)}.png"
        assert picture.meta["matched_text_index"] == k
        assert picture.meta["similarity"] == pytest.approx(float(texts[k, k]), abs=1e-6)
        assert picture.data == files[perm.index(k)].read_bytes()
    assert out.meta["assignment"] == {"sentences": 4, "candidates": 5, "images": 4}
    few = retrofit(doc, texts, pool, min_similarity=0.5, count=2)  # only the 2 best-scoring candidates
    assert few.meta["assignment"]["images"] == 2


def test_a_corpus_is_retrofitted_with_the_scorers_similarities(
    scorer: dict[str, Path], tmp_path: Path
) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = tmp_path / "pool"
    images.mkdir()
    for i in range(8):
        Image.fromarray(digit_image(digits.images[i])).save(images / f"digit-{i}.png")
    docs = [
        Document(f"doc-{n}", [f"A handwritten {DIGIT_NAMES[n]}. It was scanned. It is small."], [None])
        for n in range(3)
    ]
    write_documents(tmp_path / "text-0000.tar", docs)
    model = load_scorer(
        OpenClipScorer(arch="tiny-clip", checkpoint=str(scorer["checkpoint"]), config=scorer["config"])
    )
    summary = retrofit_corpus([str(tmp_path / "text-0000.tar")], images, tmp_path / "out", model, -1.0, 4)
    assert summary["documents"] == 3 and summary["images"] == 9 and summary["pool"] == 8
    for doc in read_documents(tmp_path / "out" / "shards" / "00000.tar"):
        texts = [t for t in doc.texts if t is not None]
        for picture in doc.pictures:
            with Image.open(images / picture.meta["image"]) as opened:
                image = model.images([opened.convert("RGB")])[0]
            sentence = model.texts([texts[picture.meta["matched_text_index"]]])[0]
            assert picture.meta["similarity"] == pytest.approx(float(image @ sentence), abs=1e-5)
