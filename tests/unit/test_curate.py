"""`vlmforge curate` on a small real-image pool built offline (tests/curate_pool.py): every planted problem
is dropped by the stage and reason it should be, every sample is accounted for, the output is
byte-identical on a rerun and on the Ray engine, and a partial curation resumes only what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.curate_pool import (
    chunk_of,
    digit_image,
    make_recipe,
    photo,
    rendered_text,
)
from vlmforge.config.load import apply_overrides
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Table
from vlmforge.curate.dedup import phash
from vlmforge.curate.steps import build_steps
from vlmforge.errors import UserError

# --------------------------------------------------------------------------------- steps one by one


def test_perceptual_hash_is_close_for_edited_copies_and_far_for_other_images() -> None:
    from PIL import Image

    def bits(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.unpackbits(a ^ b).sum())

    rocket = photo("rocket")
    base = phash(rocket)
    smaller = rocket.resize((rocket.width * 9 // 10, rocket.height * 9 // 10))
    assert bits(base, phash(smaller)) <= 4
    digit = Image.fromarray(digit_image(np.arange(64).reshape(8, 8) % 17)).convert("RGB")
    assert bits(phash(digit), phash(Image.eval(digit, lambda v: min(v + 12, 255)))) <= 4
    others = [phash(photo(n)) for n in ("coffee", "moon", "astronaut", "chelsea")]
    assert min(bits(base, o) for o in others) >= 16


def test_mser_detector_finds_rendered_text_and_masking_hides_it() -> None:
    from vlmforge.config.curate_models import MserDetector
    from vlmforge.curate.textdetect import mask_text, mser_detector, text_area

    detect = mser_detector(MserDetector())
    poster = rendered_text("welcome to the grand hotel")
    boxes = detect(np.asarray(poster))
    assert len(boxes) == 3 and text_area(boxes, *poster.size) > 0.5  # the three drawn lines
    for name in ("coffee", "rocket", "moon"):
        assert detect(np.asarray(photo(name))) == [], name
    banner = rendered_text("a ginger cat", background=photo("coffee"))
    found = detect(np.asarray(banner))
    assert len(found) == 1 and found[0][0] < 12 and found[0][1] < 12  # the banner in the top-left corner
    masked = np.asarray(mask_text(banner, found)).astype(int)
    x0, y0, x1, y1 = found[0]
    inside = masked[y0:y1, x0:x1]
    assert (inside == inside[0, 0]).all()  # one fill colour over the text
    assert (masked[y1 + 2 :] == np.asarray(banner)[y1 + 2 :]).all()  # the rest untouched


def test_clip_score_masks_text_only_where_text_is_found(scorer: dict[str, Path], tmp_path: Path) -> None:
    model = {"kind": "open_clip", "arch": "tiny-clip", **{k: str(v) for k, v in scorer.items()}}
    steps = [
        {"kind": "clip_score", "name": "plain", "top_fraction": 0.5},
        {"kind": "clip_score", "name": "masked", "top_fraction": 0.5, "mask_text": True},
    ]
    recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": "x.tar"}, steps, model=model)
    plain, masked = build_steps(recipe, Resources(recipe))
    images = [photo("coffee"), photo("moon"), rendered_text("big summer sale today only"), photo("rocket")]
    captions = ["a cup of coffee", "the moon", "big summer sale", "a rocket"]
    chunk = chunk_of(images, captions)
    rows = np.arange(len(images))
    a = plain.measure(Batch(chunk, rows))["clip_score"]
    b = masked.measure(Batch(chunk, rows))["clip_score"]
    assert np.allclose(a[[0, 1, 3]], b[[0, 1, 3]], atol=1e-6)  # no text found: the same image is scored
    assert abs(a[2] - b[2]) > 1e-4  # the poster is scored with its text masked
    decision = plain.apply(Table(np.array(chunk.keys), {"clip_score": a}))
    assert decision.keep.sum() == 2 and set(a[decision.keep]) == set(np.sort(a)[-2:])
    assert set(decision.reason[~decision.keep]) == {"low_clip_score"}


def test_embedding_dedup_matches_a_brute_force_greedy_pass(tmp_path: Path, scorer: dict[str, Path]) -> None:
    model = {"kind": "open_clip", "arch": "tiny-clip", **{k: str(v) for k, v in scorer.items()}}
    recipe = make_recipe(
        tmp_path,
        {"kind": "webdataset", "shards": "x.tar"},
        [{"kind": "embedding_dedup", "min_similarity": 0.9}],
        model=model,
    )
    (step,) = build_steps(recipe, Resources(recipe))
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    vectors = np.concatenate([base, base[:10] + 0.1 * rng.normal(size=(10, 16))])  # 10 planted near copies
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    decision = step.apply(Table(np.arange(50).astype(str), {"embedding": vectors.astype(np.float32)}))
    kept: list[int] = []
    for i in range(50):  # keep a sample unless it is 0.9-similar to an earlier kept one
        if all(vectors[i] @ vectors[j] < 0.9 for j in kept):
            kept.append(i)
    assert np.nonzero(decision.keep)[0].tolist() == kept
    assert set(range(40, 50)).isdisjoint(kept)
    assert set(decision.reason[~decision.keep]) == {"semantic_duplicate"}


def test_datacomp_image_sampling_keeps_the_clusters_targets_fall_into(
    tmp_path: Path, scorer: dict[str, Path]
) -> None:
    model = {"kind": "open_clip", "arch": "tiny-clip", **{k: str(v) for k, v in scorer.items()}}
    (tmp_path / "targets").mkdir()
    step_cfg = {"kind": "datacomp_image", "clusters": 3, "target_images": str(tmp_path / "targets")}
    recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": "x.tar"}, [step_cfg], model=model)
    (step,) = build_steps(recipe, Resources(recipe))
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3] * 5
    pool = np.concatenate([c + rng.normal(size=(20, 8)).astype(np.float32) * 0.1 for c in centres])
    step.target_embeddings = lambda: centres[[1]] + 0.05  # type: ignore[method-assign]
    decision = step.apply(Table(np.arange(60).astype(str), {"embedding": pool}, seed=3))
    assert np.nonzero(decision.keep)[0].tolist() == list(range(20, 40))  # exactly the second cluster
    assert decision.info == {"clusters": 3, "target_images": 1, "target_clusters": 1}
    with pytest.raises(UserError, match="no images under"):
        type(step).target_embeddings(step)  # the real loader names an empty target folder


def test_text_sampling_matches_whole_words_and_phrases(tmp_path: Path) -> None:
    steps = [{"kind": "datacomp_text", "vocabulary": ["cat", "space suit", "Golden Retriever"]}]
    recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": "x.tar"}, steps)
    (step,) = build_steps(recipe, Resources(recipe))
    captions = [
        "a cat on a mat",
        "concatenate strings",
        "an astronaut's space suit",
        "a golden retriever",
        "space",
    ]
    chunk = chunk_of([photo("moon")] * 5, captions)
    columns = step.measure(Batch(chunk, np.arange(5)))
    decision = step.apply(Table(np.array(chunk.keys), columns))
    assert decision.keep.tolist() == [True, False, True, True, False]


def test_metaclip_balancing_caps_head_entries_and_keeps_the_tail(tmp_path: Path) -> None:
    steps = [{"kind": "metaclip_balance", "vocabulary": ["cat", "dog", "fish"], "t": 10}]
    captions = [f"a cat number {i}" for i in range(100)] + ["a dog", "a dog and a cat", "a bird"]
    keys = np.array([f"s{i}" for i in range(len(captions))])

    def decide(seed: int) -> Any:
        recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": "x.tar"}, steps, seed=seed)
        (step,) = build_steps(recipe, Resources(recipe))
        columns = step.measure(
            Batch(chunk_of([photo("moon")] * len(captions), captions), np.arange(len(captions)))
        )
        return step.apply(Table(keys, columns, seed=seed))

    first, again, other = decide(0), decide(0), decide(1)
    assert first.keep.tolist() == again.keep.tolist()  # seeded
    assert first.keep.tolist() != other.keep.tolist()
    assert first.keep[100] and first.keep[101]  # "dog" has 2 <= t samples: probability 1
    assert first.reason[102] == "no_metadata_match"
    cats = first.keep[:100]
    assert 3 <= cats.sum() <= 20  # "cat": 101 samples, each kept with probability 10/101
    assert set(first.reason[:100][~cats]) == {"balanced_out"}
    assert first.info["entries_over_t"] == 1 and first.info["top_entries"] == {"cat": 101, "dog": 2}


# ------------------------------------------------------------------------------------ bad input
def test_list_items_take_overrides() -> None:
    data = {"steps": [{"kind": "a"}, {"kind": "b", "t": 1}]}
    assert apply_overrides(data, ["steps.1.t=5"])["steps"][1] == {"kind": "b", "t": 5}
    with pytest.raises(UserError, match="'7' is not an index"):
        apply_overrides(data, ["steps.7.t=1"])
