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

from tests.benchmark_layouts import NAMES, write_aro, write_image_folder, write_karpathy, write_sugarcrepe
from tests.conftest import last_json, run_cli

TEMPLATES = ["a photo of the number: {}.", "a handwritten {}."]


def evaluate(cwd: Path, recipe: dict[str, Any], *args: str) -> dict[str, Any]:
    """`vlmforge eval -c eval.yaml ARGS --format json` that must succeed: its JSON result, each task's
    metrics with the ``predictions`` read back from ``<output>/<task>.predictions.jsonl``."""
    (cwd / "eval.yaml").write_text(yaml.safe_dump(recipe))
    result = last_json(
        run_cli("eval", "-c", "eval.yaml", *args, "--format", "json", cwd=cwd, check=True).stdout
    )
    output = cwd / result["output"]
    for task, metrics in result["metrics"].items():
        assert "predictions" not in metrics  # never printed: written apart
        lines = (output / f"{task}.predictions.jsonl").read_text(encoding="utf-8").splitlines()
        metrics["predictions"] = [json.loads(line) for line in lines if line]
    return result


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
            {"kind": "karpathy_captioning", "annotations": str(tmp_path / "split.json"), "images": "."},
        ],
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_cli("eval", "-c", "eval.yaml", cwd=tmp_path, env={"COLUMNS": "1000"})  # one line each
    assert proc.returncode == 2, proc.stderr
    assert "no-imagenet does not exist" in proc.stderr and "b.classnames" in proc.stderr
    assert (
        "benchmark tasks read their own files" in proc.stderr and "split.json does not exist" in proc.stderr
    )
    assert (
        "'karpathy_captioning' does not apply" in proc.stderr and "tasks it can run: zeroshot" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def open_clip_pair_scores(export: Path, pairs: list[tuple[Any, str, str]]) -> list[tuple[float, float]]:
    """(caption score, negative score) per (PIL image, caption, negative) as SugarCrepe's main_eval.py
    text_retrieval computes them (RAIVNLab/sugar-crepe): open_clip's model, tokenizer and preprocess
    of the export, normalised embeddings, dot products."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{export}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export}")
    model.eval()
    scores = []
    with torch.no_grad():
        for image, caption, negative in pairs:
            image_embedding = model.encode_image(preprocess(image).unsqueeze(0), normalize=True)
            texts = model.encode_text(tokenizer([caption, negative]), normalize=True)
            both = (texts @ image_embedding.T).squeeze(1)
            scores.append((float(both[0]), float(both[1])))
    return scores


def test_karpathy_sugarcrepe_and_aro_layouts_on_an_export(clip_export: Path, tmp_path: Path) -> None:
    """COCO and Flickr30k Karpathy files, two SugarCrepe files and ARO's relation file, in one eval of an
    open_clip export: the pair scores are those open_clip itself gives (SugarCrepe's scoring; ARO's
    crop to the box), a win is a strictly higher caption score, recall@k agrees with each image's rank."""
    from PIL import Image

    coco = write_karpathy(tmp_path / "coco", 24)
    flickr = write_karpathy(tmp_path / "flickr", 16, coco=False)
    sugar = write_sugarcrepe(tmp_path / "sugarcrepe", 10)
    aro = write_aro(tmp_path / "aro", 12)
    tasks = [
        {"kind": "karpathy_retrieval", "name": "coco", "annotations": str(coco), "images": str(coco.parent)},
        {
            "kind": "karpathy_retrieval",
            "name": "flickr",
            "annotations": str(flickr),
            "images": str(flickr.parent / "flickr30k-images"),
            "captions_per_image": None,
        },
        {
            "kind": "sugarcrepe",
            "files": [str(f) for f in sugar],
            "images": str(tmp_path / "sugarcrepe" / "val2017"),
        },
        {"kind": "aro", "annotations": str(aro), "images": str(aro.parent / "images")},
    ]
    metrics = evaluate(tmp_path, {"model": str(clip_export), "tasks": tasks})["metrics"]

    coco_metrics = metrics["coco"]  # 18 test images, the first with 6 sentences of which 5 are used
    assert coco_metrics["samples"] == 18 and coco_metrics["captions"] == 90
    assert metrics["flickr"]["samples"] == 12 and metrics["flickr"]["captions"] == 61
    ranks = [p["first_hit_rank"] for p in coco_metrics["predictions"]]
    for k in (1, 5, 10):
        assert coco_metrics[f"image_to_text_R@{k}"] == pytest.approx(sum(r <= k for r in ranks) / 18)
    assert {p["image_id"] for p in coco_metrics["predictions"]} == set(range(1206, 1224))

    sugar_metrics = metrics["sugarcrepe"]
    assert sugar_metrics["samples"] == 20 and sugar_metrics["files"] == 2
    items = {(f.stem, key): item for f in sugar for key, item in json.loads(f.read_text()).items()}
    images = tmp_path / "sugarcrepe" / "val2017"
    reference = open_clip_pair_scores(
        clip_export,
        [
            (
                Image.open(images / items[p["group"], p["id"]]["filename"]),
                items[p["group"], p["id"]]["caption"],
                items[p["group"], p["id"]]["negative_caption"],
            )
            for p in sugar_metrics["predictions"]
        ],
    )
    for prediction, (caption, negative) in zip(sugar_metrics["predictions"], reference, strict=True):
        assert prediction["caption_score"] == pytest.approx(caption, abs=1e-4)
        assert prediction["negative_score"] == pytest.approx(negative, abs=1e-4)
        assert prediction["correct"] == (prediction["caption_score"] > prediction["negative_score"])
    for stem in ("replace_obj", "swap_att"):
        won = [p["correct"] for p in sugar_metrics["predictions"] if p["group"] == stem]
        assert sugar_metrics[f"accuracy_{stem}"] == pytest.approx(sum(won) / len(won))
    assert sugar_metrics["accuracy"] == pytest.approx(
        (sugar_metrics["accuracy_replace_obj"] + sugar_metrics["accuracy_swap_att"]) / 2
    )

    aro_metrics = metrics["aro"]
    records = json.loads(aro.read_text())
    crops = [
        (
            Image.open(aro.parent / "images" / r["image_path"])
            .convert("RGB")
            .crop((r["bbox_x"], r["bbox_y"], r["bbox_x"] + r["bbox_w"], r["bbox_y"] + r["bbox_h"])),
            r["true_caption"],
            r["false_caption"],
        )
        for r in records
    ]
    for prediction, (caption, negative) in zip(
        aro_metrics["predictions"], open_clip_pair_scores(clip_export, crops), strict=True
    ):
        assert prediction["caption_score"] == pytest.approx(caption, abs=1e-4)
        assert prediction["negative_score"] == pytest.approx(negative, abs=1e-4)
    groups = {g["group"]: g for g in aro_metrics["per_group"]}
    assert set(groups) == {"above", "next to", "on"} and all(g["count"] == 4 for g in groups.values())
    assert aro_metrics["accuracy"] == pytest.approx(
        sum(p["correct"] for p in aro_metrics["predictions"]) / 12
    )
    assert aro_metrics["macro_accuracy"] == pytest.approx(sum(g["accuracy"] for g in groups.values()) / 3)


def test_karpathy_captioning_writes_coco_results(coca_run: Path, tmp_path: Path) -> None:
    """A CoCa run captions the Karpathy test images: one {image_id, caption} per image, scored against all
    of each image's sentences with the caption metrics."""
    from vlmforge.evaluate.caption_metrics import caption_scores

    coco = write_karpathy(tmp_path / "coco", 16)
    task = {
        "kind": "karpathy_captioning",
        "annotations": str(coco),
        "images": str(coco.parent),
        "method": "greedy",
        "max_samples": 8,
        "examples": 2,
    }
    metrics = evaluate(tmp_path, {"run": str(coca_run), "output": str(tmp_path / "out"), "tasks": [task]})
    captioned = metrics["metrics"]["karpathy_captioning"]
    assert captioned["samples"] == 8 and len(captioned["examples"]) == 2
    predictions = captioned["predictions"]
    assert [set(p) for p in predictions] == [{"image_id", "caption"}] * 8
    test_ids = {r["cocoid"] for r in json.loads(coco.read_text())["images"] if r["split"] == "test"}
    assert {p["image_id"] for p in predictions} <= test_ids and all(p["caption"] for p in predictions)
    sentences = {
        r["cocoid"]: [s["raw"] for s in r["sentences"]] for r in json.loads(coco.read_text())["images"]
    }
    expected = caption_scores(
        [p["caption"] for p in predictions], [sentences[p["image_id"]] for p in predictions]
    )
    numeric = {k: v for k, v in expected.items() if isinstance(v, float)}
    assert numeric and {k: captioned[k] for k in numeric} == pytest.approx(numeric)
    assert all(captioned[k] == v for k, v in expected.items() if k not in numeric)
