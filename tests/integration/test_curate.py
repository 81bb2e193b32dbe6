"""`vlmforge curate` on a small real-image pool built offline (tests/curate_pool.py): every planted problem
is dropped by the stage and reason it should be, every sample is accounted for, the output is
byte-identical on a rerun and on the Ray engine, and a partial curation resumes only what is missing."""

from __future__ import annotations

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
    chunk_of,
    digit_image,
    dropped_of,
    make_recipe,
    report_of,
    shard_samples,
)
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Table
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
        assert 0.0 <= scores["language.lang_score"] <= 1.0  # the kept languages' fastText probability
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


def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path, pool: Pool, scorer: dict[str, Path]) -> None:
    unknown = run_cli(
        "curate", "-c", str(RECIPE), "steps.0.kind=caption_lenght", f"output={tmp_path / 'o'}", cwd=tmp_path
    )
    assert unknown.returncode == 2 and "unknown kind 'caption_lenght'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    shutil.copy(RECIPE, tmp_path / "r.yaml")
    missing = run_cli(
        "curate", "-c", "r.yaml", f"input.shards={tmp_path}/none-{{0..2}}.tar", "output=o", cwd=tmp_path
    )
    assert missing.returncode == 2 and "input.shards: 3 shard file(s) not found" in missing.stderr
    # the shipped recipe names files this machine does not have: validate names each of them
    shipped = run_cli("validate", "-c", str(RECIPE), cwd=tmp_path)
    assert shipped.returncode == 2 and shipped.stderr.count("error:") == 4, shipped.stderr
    for field in ("input.shards", "model.checkpoint", "target_images", "vocabulary_file"):
        assert f"{field}" in shipped.stderr
    args = overrides(pool, scorer, tmp_path / "o")
    valid = run_cli("validate", "-c", str(RECIPE), *args, "--format", "json", cwd=tmp_path, check=True)
    assert last_json(valid.stdout)["verb"] == "curate" and not (tmp_path / "o").exists()


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
