"""`vlmforge curate` on a small real-image pool built offline (tests/curate_pool.py): every planted problem
is dropped by the stage and reason it should be, every sample is accounted for, the output is
byte-identical on a rerun and on the Ray engine, and a partial curation resumes only what is missing."""

from __future__ import annotations

import json
import math
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import last_json, pretrain_json, run_cli
from tests.curate_pool import (
    DIGIT_NAMES,
    Pool,
    build_pool,
    digit_image,
    photo,
    rendered_text,
    save_random_clip,
)
from vlmforge.config.curate import CurateRecipe
from vlmforge.config.load import apply_overrides, load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Chunk, Table
from vlmforge.curate.dedup import phash
from vlmforge.curate.steps import build_steps
from vlmforge.errors import UserError
from vlmforge.verbs import curate

RECIPE = find_recipe("curate/datacomp-metaclip")
DETERMINISTIC_STAGES = [  # stages whose decisions do not depend on the (random) scoring model, in order
    "read",
    "caption_length",
    "caption_complexity",
    "repeated_tokens",
    "image_size",
    "file_size",
    "language",
    "exact_dedup",
    "near_dedup",
    "text_spotting",
]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    return build_pool(tmp_path_factory.mktemp("curate-pool"))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised tiny open_clip model saved as a local checkpoint + its config JSON."""
    return save_random_clip(tmp_path_factory.mktemp("tiny-open-clip"))


def overrides(pool: Pool, scorer: dict[str, Path], output: Path) -> list[str]:
    """The shipped recipe's pipeline on the test pool: paths, the tiny scorer, and thresholds for it."""
    return [
        f"input.shards={pool.shards}",
        f"output={output}",
        "model.arch=tiny-clip",
        f"model.config={scorer['config']}",
        f"model.checkpoint={scorer['checkpoint']}",
        "steps.3.min_side=32",  # the pool's images are small
        "steps.4.max_bytes=200000",
        "steps.9.min_similarity=0.998",  # a random model's embeddings are all alike
        "steps.10.threshold=null",
        "steps.10.top_fraction=0.9",
        "steps.11.clusters=6",
        f"steps.11.target_images={pool.targets}",
        "steps.12.vocabulary_file=null",
        "steps.12.vocabulary=[digit, number, cat, coffee, rocket, space, microscope, flower]",
        "steps.12.t=4",
    ]


@pytest.fixture(scope="module")
def cli_run(pool: Pool, scorer: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped full recipe through the CLI, once for the tests that read its outputs."""
    cwd = tmp_path_factory.mktemp("curate-cli")
    args = overrides(pool, scorer, cwd / "curated")
    proc = run_cli("curate", "-c", "curate/datacomp-metaclip", *args, "--format", "json", cwd=cwd, check=True)
    result = last_json(proc.stdout)
    result["args"] = args
    result["stderr"] = proc.stderr
    return result


def report_of(output: Path) -> dict[str, Any]:
    return json.loads((output / "report.json").read_text())


def dropped_of(output: Path) -> dict[str, tuple[str, str]]:
    lines = (output / "dropped.jsonl").read_text().splitlines()
    return {(row := json.loads(line))["key"]: (row["stage"], row["reason"]) for line in lines}


def shard_samples(output: Path) -> dict[str, dict[str, Any]]:
    """Every sample of the output shards, read with webdataset: key -> {txt, json, image ext}."""
    import webdataset as wds

    found = {}
    for shard in sorted((output / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            ext = next(e for e in ("jpg", "png") if e in sample)
            found[sample["__key__"]] = {
                "txt": sample["txt"].decode(),
                "json": json.loads(sample["json"]),
                "ext": ext,
                "image": sample[ext],
            }
    return found


# ------------------------------------------------------------------------------------ full pipeline
def test_full_recipe_accounts_for_every_sample_and_drops_each_planted_problem(
    cli_run: dict[str, Any], pool: Pool
) -> None:
    output = Path(cli_run["output"])
    report = report_of(output)
    read_failures = [k for k, (stage, _) in pool.planted.items() if stage == "read"]
    assert report["total"] == len(pool.keys) + len(read_failures)
    expected_in = report["total"]
    for stage in report["stages"]:  # in = kept + sum(dropped by reason), exactly, stage after stage
        assert stage["in"] == expected_in == stage["out"] + sum(stage["dropped"].values()), stage
        expected_in = stage["out"]
    assert report["kept"] == expected_in == sum(s["samples"] for s in report["shards"])
    assert [s["name"] for s in report["stages"]] == [  # the recipe's order: the model's stages last
        *DETERMINISTIC_STAGES,
        "embedding_dedup",
        "clip_score",
        "datacomp_image",
        "metaclip_balance",
    ]

    dropped = dropped_of(output)
    assert len(dropped) == report["total"] - report["kept"]
    early = {key: why for key, why in dropped.items() if why[0] in DETERMINISTIC_STAGES}
    assert early == pool.planted  # each planted problem, by the right stage and reason; nothing else
    kept = shard_samples(output)
    assert set(kept) == set(pool.keys) - set(dropped)
    # a 0.9 top fraction keeps exactly ceil(0.9 n)
    clip = next(s for s in report["stages"] if s["name"] == "clip_score")
    assert clip["out"] == math.ceil(0.9 * clip["in"])
    assert all(s["in"] > 0 for s in report["stages"])  # every stage saw samples: none is vacuous


def test_output_shards_keep_keys_captions_bytes_and_scores(cli_run: dict[str, Any], pool: Pool) -> None:
    output = Path(cli_run["output"])
    kept = shard_samples(output)
    assert kept
    for key, sample in kept.items():
        meta = sample["json"]
        assert meta["key"] == key and meta["kind"] == pool.kind[key]  # the input's JSON is kept
        assert sample["txt"] == pool.captions[key]
        assert meta["curate"]["source"].endswith(".tar")
        scores = meta["curate"]["scores"]
        assert -1.0 <= scores["clip_score.clip_score"] <= 1.0
        assert scores["language.lang_score"] >= 0.5
    report = report_of(output)
    busiest = max(report["shards"], key=lambda s: s["samples"])
    with tarfile.open(output / busiest["output"]) as tar:
        members = tar.getmembers()
    assert members and all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    for name in ("report.html", "plots/funnel.png", "plots/grid-kept.png", "plots/grid-dropped.png"):
        assert (output / name).stat().st_size > 1000, name
    assert all((output / plot).is_file() for plot in report["plots"])
    html = (output / "report.html").read_text()
    assert "metaclip_balance" in html and "plots/funnel.png" in html
    clip = next(s for s in report["stages"] if s["name"] == "clip_score")["histograms"]["clip_score"]
    assert sum(clip["kept"]) + sum(clip["dropped"]) == next(
        s["in"] for s in report["stages"] if s["name"] == "clip_score"
    )
    assert "curate measure: " in cli_run["stderr"]  # plain progress lines off a terminal


def test_rerun_is_byte_identical_and_resume_redoes_only_missing_shards(
    cli_run: dict[str, Any], pool: Pool, scorer: dict[str, Path], tmp_path: Path
) -> None:
    first = {s["output"]: s["sha256"] for s in report_of(Path(cli_run["output"]))["shards"]}
    output = tmp_path / "again"
    recipe = load_recipe("curate", RECIPE, [*overrides(pool, scorer, output), "engine.workers=1"])
    result = curate.run(recipe, progress=False)
    assert {s["output"]: s["sha256"] for s in result.shards} == first  # another process count, same bytes

    # simulate an interrupted run: shard 1 never measured, shard 2 written but not marked, a torn temp file
    (output / "work" / "measure" / "00001.json").unlink()
    (output / "work" / "write" / "00002.json").unlink()
    (output / "shards" / "00002.tar").write_bytes(b"torn")
    (output / "shards" / "00003.tar.tmp").write_bytes(b"torn")
    again = curate.run(recipe, progress=False)
    assert again.measured_now == [1]
    assert again.written_now == [2]  # shard 1 measured the same, so its finished output stays
    assert {s["output"]: s["sha256"] for s in again.shards} == first
    finished = curate.run(recipe, progress=False)
    assert finished.measured_now == [] and finished.written_now == []


@pytest.mark.slow
def test_ray_engine_keeps_the_same_samples_as_the_local_engine(
    cli_run: dict[str, Any], pool: Pool, scorer: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    import ray

    output = tmp_path / "ray"
    recipe = load_recipe(
        "curate", RECIPE, [*overrides(pool, scorer, output), "engine.kind=ray", "engine.workers=1"]
    )
    try:
        result = curate.run(recipe, progress=False)
    finally:
        ray.shutdown()
    local = report_of(Path(cli_run["output"]))
    assert set(shard_samples(output)) == set(shard_samples(Path(cli_run["output"])))
    assert [s["sha256"] for s in result.shards] == [s["sha256"] for s in local["shards"]]

    def counts(report: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(s["name"], s["in"], s["out"], s["dropped"]) for s in report["stages"]]

    assert counts(report_of(output)) == counts(local)


# --------------------------------------------------------------------------------- steps one by one
def make_recipe(tmp_path: Path, source: Any, steps: list[dict[str, Any]], **extra: Any) -> CurateRecipe:
    data = {"name": "t", "input": source, "output": str(tmp_path / "out"), "steps": steps, **extra}
    return CurateRecipe.model_validate(data)


def chunk_of(images: list[Any], captions: list[str]) -> Chunk:
    return Chunk(
        keys=[f"k{i}" for i in range(len(images))],
        captions=captions,
        images=images,
        raw=[b""] * len(images),
        width=np.array([i.width for i in images]),
        height=np.array([i.height for i in images]),
        nbytes=np.zeros(len(images), dtype=np.int64),
    )


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
    from vlmforge.config.curate import MserDetector
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


def test_recaption_hook_replaces_captions_and_keeps_the_originals(pool: Pool, tmp_path: Path) -> None:
    steps = [
        {"kind": "image_size", "min_side": 32},
        {
            "kind": "recaption",
            "captioner": {
                "kind": "python",
                "target": "tests.curate_pool:size_captioner",
                "options": {"prefix": "an image"},
            },
        },
        {"kind": "datacomp_text", "vocabulary": ["image"]},  # later steps see the new captions
    ]
    recipe = make_recipe(tmp_path, {"kind": "webdataset", "shards": pool.shards}, steps)
    result = curate.run(recipe, progress=False)
    kept = shard_samples(result.output)
    assert result.kept == len(kept) == len(pool.keys) - 2  # all but the tiny and the strip images
    for key, sample in kept.items():
        assert sample["txt"].startswith("an image of ") and sample["txt"].endswith(" pixels")
        assert sample["json"]["curate"]["original_caption"] == pool.captions[key]


def test_folder_input_is_cut_into_shards_of_the_given_size(digits_folder: Path, tmp_path: Path) -> None:
    steps = [{"kind": "caption_length", "min_words": 3}, {"kind": "exact_dedup"}]
    source = {"kind": "folder", "path": str(digits_folder), "samples_per_shard": 50}
    result = curate.run(make_recipe(tmp_path, source, steps), progress=False)
    assert [s["output"] for s in result.shards] == [f"shards/0000{i}.tar" for i in range(3)]
    assert result.total == 120 and result.kept == result.stages[-1]["out"] > 100
    assert sum(s["samples"] for s in result.shards) == result.kept
    assert set(shard_samples(result.output)) <= {f"img{i:03d}" for i in range(120)}


def test_a_scoring_model_trained_by_vlmforge_ranks_true_captions_higher(
    tiny_run: dict, tmp_path: Path
) -> None:
    """CLIPScore with a vlmforge run as the scorer: true digit captions beat wrong ones."""
    from PIL import Image
    from sklearn.datasets import load_digits

    recipe = make_recipe(
        tmp_path,
        {"kind": "webdataset", "shards": "x.tar"},
        [{"kind": "clip_score", "top_fraction": 0.5}],
        model={"kind": "run", "path": str(tiny_run["run_dir"])},
    )
    (step,) = build_steps(recipe, Resources(recipe))
    digits = load_digits()
    picks = np.arange(200)
    images = [Image.fromarray(digit_image(digits.images[i])).convert("RGB") for i in picks]
    labels = digits.target[picks]
    true = [f"a handwritten {DIGIT_NAMES[y]}." for y in labels]
    wrong = [f"a handwritten {DIGIT_NAMES[(y + 1) % 10]}." for y in labels]
    chunk = chunk_of(images + images, true + wrong)
    scores = step.measure(Batch(chunk, np.arange(len(chunk.keys))))["clip_score"]
    assert (scores[:200] > scores[200:]).mean() > 0.7  # the true caption wins for most images
    assert scores[:200].mean() > scores[200:].mean() + 0.03
    kept = step.apply(Table(np.array(chunk.keys), {"clip_score": scores})).keep
    assert kept[:200].sum() > kept[200:].sum()  # the top half holds more true pairs than wrong ones


# ------------------------------------------------------------------------------------ bad input
def test_list_items_take_overrides() -> None:
    data = {"steps": [{"kind": "a"}, {"kind": "b", "t": 1}]}
    assert apply_overrides(data, ["steps.1.t=5"])["steps"][1] == {"kind": "b", "t": 5}
    with pytest.raises(UserError, match="'7' is not an index"):
        apply_overrides(data, ["steps.7.t=1"])


def test_recipe_mistakes_are_named(tmp_path: Path, pool: Pool) -> None:
    base = {"kind": "webdataset", "shards": pool.shards}
    with pytest.raises(Exception, match="score with a model"):
        make_recipe(tmp_path, base, [{"kind": "clip_score", "threshold": 0.2}])
    with pytest.raises(Exception, match="exactly one of threshold or top_fraction"):
        make_recipe(tmp_path, base, [{"kind": "clip_score"}], model={"kind": "run", "path": "x"})
    with pytest.raises(Exception, match="distinct"):
        make_recipe(tmp_path, base, [{"kind": "exact_dedup"}, {"kind": "exact_dedup"}])
    recipe = make_recipe(tmp_path, base, [{"kind": "exact_dedup"}])
    curate.run(recipe, progress=False)
    changed = recipe.model_copy(update={"seed": 5})
    with pytest.raises(UserError, match="another recipe or input"):
        curate.run(changed, progress=False)


def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path, pool: Pool) -> None:
    unknown = run_cli(
        "curate", "-c", str(RECIPE), "steps.0.kind=caption_lenght", f"output={tmp_path / 'o'}", cwd=tmp_path
    )
    assert unknown.returncode == 2 and "unknown kind 'caption_lenght'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    shutil.copy(RECIPE, tmp_path / "r.yaml")
    missing = run_cli(
        "curate", "-c", "r.yaml", f"input.shards={tmp_path}/none-{{0..2}}.tar", "output=o", cwd=tmp_path
    )
    assert missing.returncode == 2 and "3 of 3 shard(s) not found" in missing.stderr
    valid = run_cli("validate", "-c", str(RECIPE), "--format", "json", cwd=tmp_path, check=True)
    assert last_json(valid.stdout)["verb"] == "curate"


def test_curated_shards_train_with_pretrain(cli_run: dict[str, Any], tmp_path: Path) -> None:
    output = Path(cli_run["output"])
    kept = report_of(output)["kept"]
    batch = min(8, kept)
    data = (
        f"data={{kind: webdataset, shards: ['{output}/shards/*.tar'], batch_size: {batch}, image_size: 16}}"
    )
    result = pretrain_json(
        tmp_path, "debug/clip-tiny", data, "train.max_steps=3", "train.log_every_steps=1", "eval=[]"
    )
    assert result["status"] == "completed" and result["steps"] == 3
    accounting = result["metrics"]["data"]
    assert accounting["read"] >= 3 * batch and not accounting["dropped"]  # curation left no bad samples
