"""`vlmforge eval -c eval.yaml` on the LLaVA-style benchmarks, each read from a tiny copy of its public file
layout (tests/llava_benchmark_files.py), on the shared tiny LLaVA finetune run. A tiny model answers
nonsense: these tests check the pipeline (counts, files, metric ranges, predictions), not accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import last_json, run_cli
from tests.llava_benchmark_files import (
    write_mmbench,
    write_pope,
    write_refcoco,
    write_scienceqa,
    write_vqav2,
)


def _recipe(path: Path, run_dir: Path, output: Path, tasks: list[dict[str, Any]]) -> Path:
    recipe = {"run": str(run_dir), "output": str(output), "batch_size": 4, "tasks": tasks}
    path.write_text(yaml.safe_dump(json.loads(json.dumps(recipe, default=str))), encoding="utf-8")
    return path


def _predictions(output: Path, name: str) -> list[dict[str, Any]]:
    """A task's per-item predictions: ``<name>.predictions.jsonl`` (never in ``<name>.json``)."""
    assert "predictions" not in json.loads((output / f"{name}.json").read_text(encoding="utf-8"))["metrics"]
    apart = output / f"{name}.predictions.jsonl"
    return [json.loads(line) for line in apart.read_text(encoding="utf-8").splitlines() if line]


def _fractions(metrics: dict[str, Any]) -> list[float]:
    rates = ("accuracy", "precision", "recall", "f1", "yes_ratio", "mean_iou")
    return [v for k, v in metrics.items() if k.startswith(rates) and isinstance(v, float)]


@pytest.fixture(scope="module")
def evaluated(llava_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """All five benchmarks (VQAv2 twice: with annotations, and as test-dev) in one eval recipe; one POPE
    image is a corrupt file, so its question is dropped."""
    root = tmp_path_factory.mktemp("llava-benchmarks")
    vqa, pope = write_vqav2(root / "vqav2"), write_pope(root / "pope")
    (pope["images"] / "COCO_val2014_000000000013.jpg").write_bytes(b"not a jpeg")
    with pope["files"][1].open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"question_id": 3, "image": "COCO_val2014_000000000013.jpg",
                                 "text": "Is there a bus in the image?", "label": "no"}) + "\n")  # fmt: skip
    sqa = write_scienceqa(root / "scienceqa")
    tasks = [
        {"kind": "vqav2", **vqa},
        {"kind": "vqav2", "name": "vqav2-testdev", "questions": vqa["questions"], "images": vqa["images"]},
        {"kind": "pope", **pope},
        {"kind": "mmbench", "path": write_mmbench(root / "mmbench"), "circular": True},
        {"kind": "scienceqa", **sqa},
        {"kind": "refcoco", "path": write_refcoco(root / "refcoco")},
    ]
    output = root / "eval"
    recipe = _recipe(root / "eval.yaml", llava_run, output, tasks)
    proc = run_cli("eval", "-c", str(recipe), "--format", "json", cwd=root, check=True)
    return {"result": last_json(proc.stdout), "output": output, "tasks": tasks}


def test_vqav2_scored_and_submitted(evaluated: dict[str, Any]) -> None:
    metrics, output = evaluated["result"]["metrics"], evaluated["output"]
    scored = metrics["vqav2"]
    assert scored["samples"] == 3 and "dropped" not in scored
    assert {"accuracy", "accuracy_yes_no", "accuracy_number", "accuracy_other"} <= set(scored)
    assert all(0.0 <= v <= 1.0 for v in _fractions(scored))
    predictions = _predictions(output, "vqav2")
    assert [p["question_id"] for p in predictions] == [420, 421, 70]
    assert predictions[2]["references"] == ["1"] * 9 + ["one"]
    assert "accuracy" not in metrics["vqav2-testdev"]  # no annotations: answers only
    assert "submission" not in json.loads((output / "vqav2-testdev.json").read_text())["metrics"]
    submission = json.loads((output / "vqav2-testdev.submission.json").read_text())
    assert [s["question_id"] for s in submission] == [420, 421, 70]
    assert [s["answer"] for s in submission] == [p["prediction"] for p in predictions]  # same answers


def test_pope_per_file_and_mean(evaluated: dict[str, Any]) -> None:
    pope = evaluated["result"]["metrics"]["pope"]
    adversarial, random = pope["files"]["coco_pope_adversarial"], pope["files"]["coco_pope_random"]
    assert adversarial["samples"] == 3 and "dropped" not in adversarial
    assert (random["samples"], random["dropped"]) == (2, 1)  # the corrupt image
    assert (
        random["dropped_examples"][0]["key"] == "3"
        and random["dropped_examples"][0]["reason"] == "decode_error"
    )
    assert pope["accuracy"] == pytest.approx((adversarial["accuracy"] + random["accuracy"]) / 2)
    assert all(0.0 <= v <= 1.0 for v in _fractions(pope))
    predictions = _predictions(evaluated["output"], "pope")
    assert len(predictions) == 5 and {p["prediction"] for p in predictions} <= {"yes", "no"}


def test_multiple_choice(evaluated: dict[str, Any]) -> None:
    metrics, output = evaluated["result"]["metrics"], evaluated["output"]
    mmbench = metrics["mmbench"]
    assert mmbench["samples"] == 3 and set(mmbench["accuracy_by_category"]) == {
        "image_topic",
        "object_localization",
    }
    assert 0.0 <= mmbench["circular_accuracy"] <= mmbench["accuracy"] <= 1.0
    rounds = _predictions(output, "mmbench")
    assert len(rounds) == 4 + 3 + 4  # one asking per rotation of each question's options
    assert [r["answer"] for r in rounds if r["index"] == "11"] == ["B", "A", "C"]  # "coffee" rotating
    scienceqa = metrics["scienceqa"]
    assert scienceqa["samples"] == 2 and set(scienceqa["accuracy_by_category"]) == {
        "natural science",
        "social science",
    }


def test_refcoco_boxes(evaluated: dict[str, Any]) -> None:
    refcoco = evaluated["result"]["metrics"]["refcoco"]
    assert refcoco["samples"] == 2 and "dropped" not in refcoco
    assert 0.0 <= refcoco["accuracy@0.5"] <= 1.0 and 0.0 <= refcoco["mean_iou"] <= 1.0
    predictions = _predictions(evaluated["output"], "refcoco")
    assert predictions[0]["box"] == [20.0, 6.0, 50.0, 34.0] and "predicted_box" in predictions[0]


def test_malformed_benchmark_file_is_a_user_error(llava_run: Path, tmp_path: Path) -> None:
    pope = write_pope(tmp_path / "pope")
    row = {"question_id": 1, "image": "COCO_val2014_000000000042.jpg", "text": "A cat?", "label": "maybe"}
    pope["files"][0].write_text(json.dumps(row) + "\n")
    recipe = _recipe(tmp_path / "eval.yaml", llava_run, tmp_path / "eval", [{"kind": "pope", **pope}])
    proc = run_cli("eval", "-c", str(recipe), cwd=tmp_path)
    assert proc.returncode == 2
    assert "coco_pope_adversarial.json" in proc.stderr and "label must be 'yes' or 'no'" in proc.stderr


def test_transformers_export_answers_as_the_run(
    llava_run: Path, evaluated: dict[str, Any], tmp_path: Path
) -> None:
    """The run exported as a transformers LLaVA folder (``model:``) gives POPE the run's answers."""
    import torch

    from vlmforge.interop.hf_llava import export

    folder = tmp_path / "hf"
    folder.mkdir()
    export(llava_run, folder, None, torch.float32)
    pope = next(task for task in evaluated["tasks"] if task["kind"] == "pope")
    recipe = {"model": str(folder), "output": str(tmp_path / "eval"), "batch_size": 4, "tasks": [pope]}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(recipe, default=str))))
    run_cli("eval", "-c", str(tmp_path / "eval.yaml"), "--format", "json", cwd=tmp_path, check=True)
    exported = _predictions(tmp_path / "eval", "pope")
    from_run = _predictions(evaluated["output"], "pope")
    assert [p["output"] for p in exported] == [p["output"] for p in from_run] and len(exported) == 5
