"""`vlmforge eval score` and `vlmforge eval compare` through the real CLI, on reference files written here.

Expected values are worked by hand from each benchmark's published definition: VQA v2 accuracy as
GT-Vision-Lab/VQA vqaEval.py defines it (per question, min(1, matching other annotators / 3) averaged over
the 10 leave-one-out subsets); POPE's accuracy/precision/recall/F1 with "yes" positive (AoiDragon/POPE
evaluate.py); RefCOCO accuracy@0.5 and IoU of axis-aligned boxes. Captions identical to a reference score
1 on BLEU and ROUGE-L (the caption metrics themselves are tested against pycocoevalcap in their own tests)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import last_json, run_cli


def _write(path: Path, payload: Any, lines: bool = False) -> Path:
    text = "".join(json.dumps(x) + "\n" for x in payload) if lines else json.dumps(payload)
    path.write_text(text)
    return path


def _score(cwd: Path, task: str, predictions: Path, references: Path, *flags: str) -> dict[str, Any]:
    proc = run_cli(
        "eval", "score", task, "--predictions", str(predictions), "--references", str(references),
        *flags, "--format", "json", cwd=cwd, check=True,
    )  # fmt: skip
    return last_json(proc.stdout)


def test_score_vqav2_official_formats(tmp_path: Path) -> None:
    def annotation(qid: int, kind: str, answers: list[str]) -> dict[str, Any]:
        return {"question_id": qid, "answer_type": kind, "answers": [{"answer": a} for a in answers]}

    refs = _write(
        tmp_path / "annotations.json",
        {
            "annotations": [
                annotation(1, "yes/no", ["yes"] * 10),
                annotation(2, "number", ["2"] * 2 + ["3"] * 8),
                annotation(3, "other", ["red"] * 10),
            ]
        },
    )
    perfect = _write(
        tmp_path / "perfect.json",
        [{"question_id": q, "answer": a} for q, a in [(1, "yes"), (2, "3"), (3, "red")]],
    )
    assert _score(tmp_path, "vqav2", perfect, refs)["metrics"]["accuracy"] == 1.0
    # q1 right (1); q2 "two" -> "2": left-out "2" leaves 1 match (1/3), left-out "3" leaves 2 (2/3):
    # (2 * 1/3 + 8 * 2/3) / 10 = 0.6; q3 wrong (0)
    mixed = _write(
        tmp_path / "mixed.json",
        [{"question_id": q, "answer": a} for q, a in [(1, "yes"), (2, "two"), (3, "blue")]],
    )
    result = _score(tmp_path, "vqav2", mixed, refs)
    assert result["scale"] == "0-1" and result["counts"]["scored"] == 3
    assert result["metrics"]["accuracy"] == pytest.approx(1.6 / 3)
    assert result["metrics"]["accuracy_number"] == pytest.approx(0.6)
    assert result["metrics"]["accuracy_yes_no"] == 1.0 and result["metrics"]["accuracy_other"] == 0.0


def test_score_pope_and_missing_answers(tmp_path: Path) -> None:
    labels = ["yes", "yes", "no", "no"]
    refs = _write(
        tmp_path / "questions.jsonl",
        [{"question_id": i, "text": "Is there a dog?", "label": y} for i, y in enumerate(labels)],
        lines=True,
    )
    perfect = _write(
        tmp_path / "perfect.jsonl",
        [{"question_id": i, "text": y.capitalize() + "."} for i, y in enumerate(labels)],
        lines=True,
    )
    assert _score(tmp_path, "pope", perfect, refs)["metrics"] == {
        "accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 0.5,
    }  # fmt: skip
    # answers yes, no, yes (wrong), no -> TP 1, FP 1, FN 1, TN 1; question 3 missing -> scored wrong
    answers = [(0, "Yes, there is."), (1, "No, there is not."), (2, "Yes")]
    partial = _write(
        tmp_path / "partial.jsonl", [{"question_id": i, "text": t} for i, t in answers], lines=True
    )
    refused = run_cli(
        "eval", "score", "pope", "--predictions", str(partial), "--references", str(refs), cwd=tmp_path
    )
    assert refused.returncode == 2 and "1 references have no prediction (3)" in refused.stderr
    result = _score(tmp_path, "pope", partial, refs, "--allow-missing")
    assert result["counts"] == {"references": 4, "predictions": 3, "scored": 3, "missing": 1}
    assert result["missing_ids"] == [3]
    # the missing "no" question counts as a "yes" answer: TP 1, FP 2, FN 1, TN 0
    assert result["metrics"]["accuracy"] == 0.25 and result["metrics"]["precision"] == pytest.approx(1 / 3)
    assert result["metrics"]["recall"] == 0.5 and result["metrics"]["f1"] == pytest.approx(0.4)


def test_score_multiple_choice_and_refcoco(tmp_path: Path) -> None:
    options = ["a cat", "a dog", "a bird"]
    questions = [{"question_id": f"q{i}", "answer": a, "options": options} for i, a in enumerate("ABCB")]
    refs = _write(tmp_path / "mc.json", questions)
    said = ["A", "The answer is (B).", "a dog", "I cannot tell"]  # right, right, wrong (B, not C), none
    preds = _write(
        tmp_path / "mc_pred.json", [{"question_id": f"q{i}", "prediction": p} for i, p in enumerate(said)]
    )
    assert _score(tmp_path, "multiple_choice", preds, refs)["metrics"] == {"accuracy": 0.5}

    boxes = [{"id": i, "image": f"{i}.jpg", "expression": "the dog", "box": [0, 0, 10, 10]} for i in range(2)]
    refs = _write(tmp_path / "refcoco.json", boxes)
    perfect = _write(tmp_path / "perfect.json", [{"id": i, "box": [0, 0, 10, 10]} for i in range(2)])
    assert _score(tmp_path, "refcoco", perfect, refs)["metrics"] == {"accuracy@0.5": 1.0, "mean_iou": 1.0}
    # [0, 0, 10, 5] covers half the truth: IoU 0.5 (a hit); [5, 0, 15, 10]: 50 / 150 = 1/3 (a miss)
    mixed = _write(
        tmp_path / "mixed.json",
        [{"id": 0, "box": [0, 0, 10, 5]}, {"question_id": 1, "text": "[5, 0, 15, 10]"}],
    )
    metrics = _score(tmp_path, "refcoco", mixed, refs)["metrics"]
    assert metrics["accuracy@0.5"] == 0.5 and metrics["mean_iou"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_score_coco_captions(tmp_path: Path) -> None:
    refs = _write(
        tmp_path / "captions.json",
        {
            "images": [{"id": 1}, {"id": 2}],
            "annotations": [
                {"image_id": 1, "id": 10, "caption": "a dog runs on the grass"},
                {"image_id": 1, "id": 11, "caption": "a brown dog playing outside"},
                {"image_id": 2, "id": 12, "caption": "two people ride bikes down a street"},
            ],
        },
    )
    said = {1: "a dog runs on the grass", 2: "two people ride bikes down a street"}
    perfect = _write(tmp_path / "perfect.json", [{"image_id": i, "caption": c} for i, c in said.items()])
    result = _score(tmp_path, "coco_captions", perfect, refs)
    assert "CIDEr" in result["scale"]
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert result["metrics"][name] == pytest.approx(1.0, abs=1e-6), name


def test_score_refuses_bad_files(tmp_path: Path) -> None:
    refs = _write(tmp_path / "refs.json", [{"question_id": 1, "answer": "A"}])
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question_id": 1,\n "prediction": "A"')
    proc = run_cli(
        "eval",
        "score",
        "multiple_choice",
        "--predictions",
        str(broken),
        "--references",
        str(refs),
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "broken.json: not valid JSON at line 2" in proc.stderr
    extra = _write(tmp_path / "extra.json", [{"question_id": i, "prediction": "A"} for i in (1, 1, 5)])
    proc = run_cli(
        "eval",
        "score",
        "multiple_choice",
        "--predictions",
        str(extra),
        "--references",
        str(refs),
        cwd=tmp_path,
    )
    assert (
        proc.returncode == 2
        and "several predictions (1)" in proc.stderr
        and "does not have (5)" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_eval_help_lists_subcommands_and_keeps_the_evaluation(tmp_path: Path) -> None:
    listed = run_cli("eval", "--help", cwd=tmp_path, check=True).stdout
    assert all(name in listed for name in ("score", "compare", "run"))
    assert "--predictions" in run_cli("eval", "score", "--help", cwd=tmp_path, check=True).stdout
    refused = run_cli("eval", "data_split=val", cwd=tmp_path)  # an override first: still the evaluation
    assert refused.returncode == 2 and "give an eval recipe (-c), a run directory (--run)" in refused.stderr


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _predictions_agree_with_metrics(folder: Path) -> None:
    """Each task's per-item predictions give back its metrics."""
    metrics = {
        p.stem: json.loads(p.read_text())["metrics"] for p in folder.glob("*.json") if p.stem != "summary"
    }
    zeroshot = _lines(folder / "zeroshot.predictions.jsonl")
    assert len(zeroshot) == metrics["zeroshot"]["samples"]
    hits = [row["label"] == row["predicted"] for row in zeroshot]
    assert sum(hits) / len(hits) == pytest.approx(metrics["zeroshot"]["top1"])
    assert sum(row["label"] in row["top5"] for row in zeroshot) / len(hits) == pytest.approx(
        metrics["zeroshot"]["top5"]
    )
    probe = _lines(folder / "linear_probe.predictions.jsonl")
    assert sum(r["label"] == r["predicted"] for r in probe) / len(probe) == pytest.approx(
        metrics["linear_probe"]["top1"]
    )
    compositional = _lines(folder / "compositional.predictions.jsonl")
    won = [
        all(p is None or row["caption_score"] > p for p in row["perturbed_scores"].values())
        for row in compositional
        if any(p is not None for p in row["perturbed_scores"].values())
    ]
    assert len(won) == metrics["compositional"]["images"]
    assert sum(won) / len(won) == pytest.approx(metrics["compositional"]["accuracy"])
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["tasks"]) == set(metrics)
    for name in ("zeroshot.confusion.png", "zeroshot.per_class.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
    assert not (folder / "retrieval.recall.png").exists()


def test_compare_two_evaluations(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    cwd, run_dir = tiny_run["cwd"], tiny_run["run_dir"]
    tasks = "tasks=[{kind: zeroshot}, {kind: compositional}, {kind: linear_probe, max_train_samples: 300}]"
    other_tasks = tmp_path / "other-tasks"
    run_cli("eval", "--run", str(run_dir), f"output={other_tasks}", tasks, cwd=cwd, check=True)
    _predictions_agree_with_metrics(other_tasks)
    plot = tmp_path / "compare.png"
    proc = run_cli(
        "eval",
        "compare",
        str(run_dir),
        str(other_tasks),
        "--format",
        "json",
        "--plot",
        str(plot),
        cwd=cwd,
        check=True,
    )
    result = last_json(proc.stdout)
    rows = {row["name"]: row for row in result["metrics"]}
    first, second = str(run_dir), str(other_tasks)
    saved = json.loads((run_dir / "eval" / "zeroshot.json").read_text())["metrics"]
    assert rows["zeroshot.top1"]["shared"] and rows["zeroshot.top1"]["values"][first] == saved["top1"]
    assert (
        rows["zeroshot.top1"]["values"][second]
        == json.loads((other_tasks / "zeroshot.json").read_text())["metrics"]["top1"]
    )
    assert not rows["retrieval.image_to_text_R@1"]["shared"] and not rows["compositional.accuracy"]["shared"]
    assert rows["retrieval.image_to_text_R@1"]["values"][second] is None
    assert "zeroshot.seconds" not in rows
    cost = {row["name"]: row["values"] for row in result["cost"]}
    measured = json.loads((run_dir / "actual.json").read_text())["wall_seconds"] / 3600
    assert cost["actual.wall_hours"] == {first: pytest.approx(measured), second: pytest.approx(measured)}
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 0

    table = run_cli("eval", "compare", str(run_dir), str(other_tasks), "--format", "csv", cwd=cwd, check=True)
    parsed = list(csv.reader(io.StringIO(table.stdout)))
    assert parsed[0] == ["metric", "shared", first, second]
    assert next(r for r in parsed if r[0].startswith("retrieval."))[:2] == [
        "retrieval.image_to_text_R@1",
        "false",
    ]

    refused = run_cli("eval", "compare", str(run_dir), str(tmp_path / "nothing"), cwd=cwd)
    assert refused.returncode == 2 and "nothing is not a folder" in refused.stderr
    assert f"vlmforge eval --run {tmp_path / 'nothing'}" in refused.stderr
