"""Benchmark file readers (JSON, JSON lines, TSV, image paths, the fixed subset), the ImageNet folder
layout against torchvision's ImageFolder, and where benchmark tasks are accepted in recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_layouts import write_image_folder
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
