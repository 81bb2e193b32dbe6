"""Benchmark file readers (JSON, JSON lines, TSV, image paths, the fixed subset), the ImageNet folder
layout against torchvision's ImageFolder, and where benchmark tasks are accepted in recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_layouts import write_aro, write_image_folder, write_karpathy, write_sugarcrepe
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks import path_problems, task_problems
from vlmforge.evaluate.benchmarks.imagenet import class_folders, class_names, folder_images, read_templates
from vlmforge.evaluate.benchmarks.layout import image_paths, read_json, read_jsonl, read_tsv, require, subset


def test_class_folders_and_images_are_torchvision_image_folders(tmp_path: Path) -> None:
    """Classes, files and labels as torchvision.datasets.ImageFolder (the reference loader) finds them:
    nested files, upper-case suffixes and files that are no image included or left out alike."""
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path, 40)
    moved = sorted((tmp_path / "n00000003").iterdir())[0]
    (tmp_path / "n00000003" / "nested").mkdir()
    moved.rename(tmp_path / "n00000003" / "nested" / f"a{moved.suffix}")
    (tmp_path / "n00000005" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("a file beside the class folders")
    reference = ImageFolder(str(tmp_path))
    folders = class_folders(tmp_path)
    files, labels = folder_images(tmp_path, folders)
    assert folders == reference.classes
    assert [(str(tmp_path / f), label) for f, label in zip(files, labels, strict=True)] == reference.samples


def test_class_names_from_lines_or_json_in_sorted_folder_order(tmp_path: Path) -> None:
    folders = ["n02", "n10"]
    lines = tmp_path / "names.txt"
    lines.write_text("goldfish\n\nshark\n")
    assert class_names(lines, folders) == ["goldfish", "shark"]
    mapping = tmp_path / "names.json"
    mapping.write_text('{"n10": "shark", "n02": "goldfish", "n99": "unused"}')
    assert class_names(mapping, folders) == ["goldfish", "shark"]
    assert class_names(None, folders) == folders
    lines.write_text("goldfish\n")
    with pytest.raises(UserError, match="has 1 names, the root has 2 class folders"):
        class_names(lines, folders)
    mapping.write_text('{"n02": "goldfish"}')
    with pytest.raises(UserError, match=r"no class for 1 folder.*n10"):
        class_names(mapping, folders)


def test_templates_need_one_placeholder_per_line(tmp_path: Path) -> None:
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\n\nan origami {}.\n")
    assert read_templates(path) == ["a photo of a {}.", "an origami {}."]
    path.write_text("a photo of a {}.\na photo.\n")
    with pytest.raises(UserError, match="line 2"):
        read_templates(path)


def test_malformed_files_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "split.json"
    bad.write_text('{"images": [\n  {"filename": "a.jpg",}\n]}')
    with pytest.raises(UserError, match=r"split\.json: not valid JSON at line 2"):
        read_json(bad, "the split file")
    lines = tmp_path / "q.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(UserError, match=r"q\.jsonl, line 3"):
        read_jsonl(lines, "questions")
    tsv = tmp_path / "bench.tsv"
    tsv.write_text("index\tquestion\tanswer\n0\twhat?\tA\n1\twhy?\n")
    with pytest.raises(UserError, match=r"bench\.tsv, line 3: 2 tab-separated fields, the header has 3"):
        read_tsv(tsv, ["question"], "the benchmark TSV")
    with pytest.raises(UserError, match="no column 'image'"):
        read_tsv(tsv, ["image", "question"], "the benchmark TSV")
    tsv.write_text('index\tquestion\n0\t"quoted" text\n')
    assert read_tsv(tsv, ["question"], "the TSV") == [{"index": "0", "question": '"quoted" text'}]
    with pytest.raises(UserError, match="no such file"):
        read_json(tmp_path / "absent.json", "the split file")


def test_required_fields_name_the_record() -> None:
    assert require({"caption": "a dog"}, "caption", str, "f.json, item 3") == "a dog"
    with pytest.raises(UserError, match=r"f\.json, item 3: no field 'caption' \(it has filename\)"):
        require({"filename": "x.jpg"}, "caption", str, "f.json, item 3")
    with pytest.raises(UserError, match="field 'bbox_x' should be int or float"):
        require({"bbox_x": "12"}, "bbox_x", (int, float), "f.json, item 0")
    with pytest.raises(UserError, match="expected a JSON object"):
        require(["a"], "caption", str, "f.json, item 0")


def test_missing_images_are_counted_with_the_first_few_named(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    names = ["a.jpg", *[f"gone{i}.jpg" for i in range(7)]]
    with pytest.raises(UserError) as caught:
        image_paths(tmp_path, names, tmp_path / "split.json")
    message = caught.value.message
    assert "7 of the 8 images" in message and "gone0.jpg" in message and "gone4.jpg" in message
    assert "gone5.jpg" not in message and "and 2 more" in message
    assert image_paths(tmp_path, ["a.jpg"], tmp_path / "split.json") == [tmp_path / "a.jpg"]


def test_subset_is_fixed_sorted_and_whole_without_a_limit() -> None:
    assert subset(5, None) == subset(5, 9) == [0, 1, 2, 3, 4]
    chosen = subset(1000, 10)
    assert chosen == sorted(chosen) and len(set(chosen)) == 10 and chosen == subset(1000, 10)


def test_benchmark_tasks_belong_in_eval_recipes(tmp_path: Path) -> None:
    recipe = load_recipe(
        "eval",
        None,
        ["model=some/export", "tasks=[{kind: imagenet, root: in1k/val, max_samples: 50, name: in1k-sub}]"],
        base={},
    )
    task = recipe.tasks[0]
    assert task.result_name == "in1k-sub" and task.paths() == {"root": Path("in1k/val")}
    [problem] = path_problems([task])
    assert "in1k-sub.root: in1k/val does not exist" in problem.message
    with pytest.raises(UserError, match="'imagenet' is a benchmark"):
        load_recipe(
            "pretrain", find_recipe("debug/clip-tiny"), [f"eval=[{{kind: imagenet, root: {tmp_path}}}]"]
        )


def test_a_model_runs_only_its_kinds_benchmarks(tmp_path: Path) -> None:
    recipe = load_recipe(
        "eval",
        None,
        [
            "model=m",
            f"tasks=[{{kind: imagenet, root: {tmp_path}}}, {{kind: imagenet, root: {tmp_path}}}]",
        ],
        base={},
    )
    problems = task_problems(list(recipe.tasks or []), "llava", Path("m"))
    assert "'imagenet' does not apply to m, a llava model" in problems[0].message
    assert "two tasks write eval/imagenet.json" in problems[-1].message
    assert task_problems(list(recipe.tasks or [])[:1], "siglip", Path("m")) == []


def test_karpathy_retrieval_protocol_matches_clip_benchmark() -> None:
    """Five captions per image (the first five of images with six or seven): an image hits when any of its
    captions is retrieved, a caption when its image is. Reference values: recall_at_k of
    LAION-AI/CLIP_benchmark clip_benchmark/metrics/zeroshot_retrieval.py (commit 082089f5), run once on
    these embeddings (numpy default_rng(7), as built below); its image_retrieval_recall is text->image."""
    import numpy as np
    import torch

    from vlmforge.evaluate.benchmarks.karpathy import caption_owners, first_hit_ranks
    from vlmforge.evaluate.metrics import retrieval_recall

    rng = np.random.default_rng(7)
    counts = [5, 5, 6, 5, 7, 5, 5, 5]
    images = rng.standard_normal((len(counts), 16))
    owner_all = [i for i, c in enumerate(counts) for _ in range(c)]
    texts = 0.6 * images[owner_all] + rng.standard_normal((len(owner_all), 16))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    sentences = [[f"{i}/{j}" for j in range(c)] for i, c in enumerate(counts)]
    row_of = {s: r for r, s in enumerate(s for image in sentences for s in image)}
    kept, owners = caption_owners(sentences, 5)
    assert len(kept) == 40 and owners.tolist() == [i for i in range(8) for _ in range(5)]
    text_features = torch.tensor(texts[[row_of[s] for s in kept]], dtype=torch.float32)
    image_features = torch.tensor(images, dtype=torch.float32)
    recall = retrieval_recall(image_features, text_features, torch.arange(8), owners, (1, 2, 5))
    reference = {"image_to_text": (0.625, 1.0, 1.0), "text_to_image": (0.725, 0.9, 1.0)}
    for direction, values in reference.items():
        for k, value in zip((1, 2, 5), values, strict=True):
            assert recall[f"{direction}_R@{k}"] == pytest.approx(value)
    ranks = first_hit_ranks(image_features @ text_features.T, owners[None, :] == torch.arange(8)[:, None])
    assert [float((ranks <= k).float().mean()) for k in (1, 2, 5)] == pytest.approx(
        reference["image_to_text"]
    )
    assert caption_owners(sentences, None)[0] == [s for image in sentences for s in image]


def test_karpathy_split_files_read_coco_and_flickr_layouts(tmp_path: Path) -> None:
    from vlmforge.config.benchmarks import KarpathyRetrievalTask
    from vlmforge.evaluate.benchmarks.karpathy import read_karpathy

    coco = write_karpathy(tmp_path / "coco", 8)
    task = KarpathyRetrievalTask(annotations=coco, images=coco.parent)
    images = read_karpathy(task)
    assert [im.image_id for im in images] == list(range(1202, 1208))  # cocoid of the test images
    assert images[0].picture.path == coco.parent / "val2014" / "COCO_val2014_000000001202.jpg"
    raw = [s["raw"] for s in json.loads(coco.read_text())["images"][2]["sentences"]]
    assert images[0].sentences == raw and len(raw) == 6
    flickr = write_karpathy(tmp_path / "flickr", 8, coco=False)
    task = KarpathyRetrievalTask(annotations=flickr, images=flickr.parent / "flickr30k-images", max_samples=3)
    assert [im.picture.key for im in read_karpathy(task)] == [f"{2202 + k}.jpg" for k in subset(6, 3)]
    assert [im.image_id for im in read_karpathy(task)] == [2 + k for k in subset(6, 3)]  # imgid
    with pytest.raises(UserError, match="no image of split 'val' \\(it has test, train\\)"):
        read_karpathy(KarpathyRetrievalTask(annotations=coco, images=coco.parent, split="val"))
    with pytest.raises(UserError, match="6 of the 6 images"):
        read_karpathy(KarpathyRetrievalTask(annotations=coco, images=tmp_path))
    broken = json.loads(coco.read_text())
    del broken["images"][3]["sentences"][1]["raw"]
    coco.write_text(json.dumps(broken))
    with pytest.raises(UserError, match=r"images\[3\]\.sentences\[1\]: no field 'raw'"):
        read_karpathy(KarpathyRetrievalTask(annotations=coco, images=coco.parent))


def test_sugarcrepe_and_aro_files_name_the_bad_item(tmp_path: Path) -> None:
    from vlmforge.evaluate.benchmarks.pairs import read_aro, read_sugarcrepe

    [replace_obj, _] = write_sugarcrepe(tmp_path, 4)
    pairs = read_sugarcrepe(replace_obj, tmp_path / "val2017", None)
    assert [p.group for p in pairs] == ["replace_obj"] * 4 and pairs[0].caption != pairs[0].negative
    items = json.loads(replace_obj.read_text())
    items["2"].pop("negative_caption")
    replace_obj.write_text(json.dumps(items))
    with pytest.raises(UserError, match=r"replace_obj\.json, item '2': no field 'negative_caption'"):
        read_sugarcrepe(replace_obj, tmp_path / "val2017", None)
    relation = write_aro(tmp_path / "aro", 3)
    [first, *_] = read_aro(relation, tmp_path / "aro" / "images", None)
    record = json.loads(relation.read_text())[0]
    assert first.picture.box == (record["bbox_x"], record["bbox_y"], 32, 32) and first.group == "on"
    attribution = write_aro(tmp_path / "aro", 3, attribution=True)
    assert [p.group for p in read_aro(attribution, tmp_path / "aro" / "images", None)] == [
        "white_small",
        "small_white",
        "white_small",
    ]
    records = json.loads(attribution.read_text())
    records[1]["attributes"] = ["small"]
    attribution.write_text(json.dumps(records))
    with pytest.raises(UserError, match=r"item 1: field 'attributes' should be two attribute words"):
        read_aro(attribution, tmp_path / "aro" / "images", None)
