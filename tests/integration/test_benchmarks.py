"""Benchmarks in their own file layouts through `vlmforge eval -c eval.yaml`, on the debug run and on its
open_clip export: ImageNet-style class folders here (tiny fixtures written in the exact layout, with real
digit images), bad recipes refused before the model loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.benchmark_layouts import NAMES, write_image_folder
from tests.conftest import last_json, run_cli

TEMPLATES = ["a photo of the number: {}.", "a handwritten {}."]


def evaluate(cwd: Path, recipe: dict[str, Any], *args: str) -> dict[str, Any]:
    """`vlmforge eval -c eval.yaml ARGS --format json` that must succeed: its JSON result."""
    (cwd / "eval.yaml").write_text(yaml.safe_dump(recipe))
    return last_json(
        run_cli("eval", "-c", "eval.yaml", *args, "--format", "json", cwd=cwd, check=True).stdout
    )


@pytest.fixture(scope="module")
def clip_export(tiny_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmforge.interop.open_clip_export import export

    out = tmp_path_factory.mktemp("bench-export") / "model"
    out.mkdir()
    export(tiny_run["run_dir"], out, None, torch.float32)
    return out


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 digits in ImageNet's layout, with a class-names file and a templates file beside it."""
    root = tmp_path_factory.mktemp("imagenet")
    write_image_folder(root / "val", 120)
    (root / "classnames.txt").write_text("\n".join(NAMES) + "\n")
    (root / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return root


def test_imagenet_folders_score_as_zero_shot_on_the_same_images(
    tiny_run: dict[str, Any], imagenet_folder: Path, tmp_path: Path
) -> None:
    """The class-folder benchmark gives the accuracy the zero-shot task finds on the same files read as
    a folder source with labels, and a prediction per image."""
    run_dir = tiny_run["run_dir"]
    root = imagenet_folder / "val"
    task = {
        "kind": "imagenet",
        "root": str(root),
        "classnames": str(imagenet_folder / "classnames.txt"),
        "templates": str(imagenet_folder / "templates.txt"),
    }
    result = evaluate(tmp_path, {"run": str(run_dir), "output": str(tmp_path / "out"), "tasks": [task]})
    metrics = result["metrics"]["imagenet"]
    assert metrics["samples"] == 120 and metrics["classes"] == 10 and metrics["templates"] == 2
    predictions = metrics["predictions"]
    assert len(predictions) == 120 and len({p["file"] for p in predictions}) == 120
    hits = [p["label"] == p["predicted"] for p in predictions]
    assert metrics["top1"] == pytest.approx(sum(hits) / 120)
    assert metrics["top5"] == pytest.approx(sum(p["label"] in p["top5"] for p in predictions) / 120)
    per_class = [c["accuracy"] for c in metrics["per_class_accuracy"]]
    assert [c["name"] for c in metrics["per_class_accuracy"]] == NAMES
    assert metrics["mean_per_class_accuracy"] == pytest.approx(sum(per_class) / 10)
    assert metrics["top1"] > 0.2  # chance is 0.1
    assert json.loads((tmp_path / "out" / "imagenet.json").read_text())["metrics"]["top1"] == metrics["top1"]

    captions = root / "captions.jsonl"  # the same files as a folder source with labels
    captions.write_text(
        "\n".join(
            json.dumps({"image": p["file"], "caption": f"a handwritten {p['label']}.", "label": p["label"]})
            for p in predictions
        )
    )
    zero_shot = evaluate(
        tmp_path,
        {
            "run": str(run_dir),
            "output": str(tmp_path / "folder"),
            "data": {"kind": "folder", "path": str(root), "classnames": NAMES},
            "tasks": [{"kind": "zeroshot", "templates": TEMPLATES}],
        },
    )["metrics"]["zeroshot"]
    assert metrics["top1"] == pytest.approx(zero_shot["top1"], abs=1 / 120 + 1e-6)  # at most one tie apart
    assert metrics["top5"] == pytest.approx(zero_shot["top5"], abs=1 / 120 + 1e-6)


def test_an_export_runs_two_named_subsets_and_drops_a_corrupt_image(
    tiny_run: dict[str, Any], clip_export: Path, tmp_path: Path
) -> None:
    """An open_clip export evaluates as its run does; a corrupt image is dropped and counted;
    ``max_samples`` takes a fixed subset; two tasks of one kind write their own files."""
    root = tmp_path / "val"
    write_image_folder(root, 40)
    (root / "n00000004" / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    tasks = [
        {"kind": "imagenet", "root": str(root), "name": "all"},
        {"kind": "imagenet", "root": str(root), "name": "sub", "max_samples": 12},
    ]
    exported = evaluate(tmp_path, {"model": str(clip_export), "tasks": tasks})
    assert Path(exported["output"]) == clip_export / "eval"
    assert {p.name for p in (clip_export / "eval").iterdir()} >= {"all.json", "sub.json"}
    every, sub = exported["metrics"]["all"], exported["metrics"]["sub"]
    assert every["samples"] == 40 and every["dropped"] == 1
    assert every["dropped_examples"][0]["key"] == "n00000004/corrupt.JPEG"
    assert sub["samples"] + sub.get("dropped", 0) == 12
    run = evaluate(
        tmp_path, {"run": str(tiny_run["run_dir"]), "output": str(tmp_path / "run"), "tasks": tasks}
    )
    assert [p["predicted"] for p in run["metrics"]["all"]["predictions"]] == [
        p["predicted"] for p in every["predictions"]
    ]


def test_bad_benchmark_recipes_are_refused_before_the_model_loads(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """Every problem at once, exit 2: a task the model's kind cannot run, each missing path, data beside
    benchmarks."""
    recipe = {
        "run": str(tiny_run["run_dir"]),
        "data": {"kind": "digits"},
        "tasks": [
            {"kind": "imagenet", "root": str(tmp_path / "no-imagenet")},
            {
                "kind": "imagenet",
                "root": str(tmp_path),
                "classnames": str(tmp_path / "names.txt"),
                "name": "b",
            },
        ],
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_cli("eval", "-c", "eval.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no-imagenet does not exist" in proc.stderr and "b.classnames" in proc.stderr
    assert "benchmark tasks read their own files" in proc.stderr
    assert "Traceback" not in proc.stderr
