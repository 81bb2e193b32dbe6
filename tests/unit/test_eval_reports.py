"""Evaluation reports: per-item predictions and summary files, their plots, the readers and id matching of
``eval score``, and the cost rows of ``eval compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from vlmforge.errors import UserError, UserErrors
from vlmforge.evaluate.item_predictions import first_hit_ranks, recall_at, retrieval_rows, zero_shot_rows
from vlmforge.evaluate.metrics import retrieval_recall
from vlmforge.evaluate.plots import MAX_PLOTTED_CLASSES, confusion_matrix, write_plots
from vlmforge.evaluate.results import EvalResult, scalar_metrics, without_item_lists
from vlmforge.evaluate.score_readers import read_document, read_records
from vlmforge.evaluate.scoring import match_ids, score
from vlmforge.planning.accelerators import load_catalog
from vlmforge.verbs.eval_compare import run_cost
from vlmforge_cli.common import DefaultCommandGroup


def _zero_shot_metrics(classes: int, images: int = 12) -> dict:
    logits = torch.randn(images, classes, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(images) % classes
    rows = zero_shot_rows(logits, labels, [f"class {k}" for k in range(classes)])
    return {"top1": 0.5, "classes": classes, "match": "label", "predictions": rows}


def test_write_keeps_predictions_and_plots_out_of_the_metrics(tmp_path: Path) -> None:
    metrics = {"zeroshot": _zero_shot_metrics(3), "linear_probe": {"top1": 1.0, "per_class": {"a": 1}}}
    result = EvalResult(tmp_path / "run", tmp_path / "w.ckpt", "digits:val", metrics)
    result.write()
    folder = tmp_path / "run" / "eval"
    saved = json.loads((folder / "zeroshot.json").read_text())
    assert "predictions" not in saved["metrics"] and saved["metrics"]["top1"] == 0.5
    lines = (folder / "zeroshot.predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(12))
    assert json.loads(lines[0]).keys() >= {"label", "predicted", "top5"}
    assert not (folder / "linear_probe.predictions.jsonl").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["tasks"]["linear_probe"] == {"top1": 1.0}  # scalars only
    assert summary["data"] == "digits:val" and "predictions" not in summary["tasks"]["zeroshot"]
    assert "predictions" not in result.to_json()["metrics"]["zeroshot"]
    for name in ("zeroshot.confusion.png", "zeroshot.per_class.png"):
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size[0] > 0


def test_summary_keeps_earlier_tasks_of_the_same_weights_only(tmp_path: Path) -> None:
    def evaluate(weights: str, task: str) -> dict:
        EvalResult(tmp_path, tmp_path / weights, "d", {task: {"top1": 0.1}}).write()
        return json.loads((tmp_path / "eval" / "summary.json").read_text())["tasks"]

    evaluate("a.ckpt", "zeroshot")
    assert set(evaluate("a.ckpt", "retrieval")) == {"zeroshot", "retrieval"}
    assert set(evaluate("b.ckpt", "compositional")) == {"compositional"}


def test_a_task_evaluated_again_without_predictions_leaves_no_stale_files(tmp_path: Path) -> None:
    EvalResult(tmp_path, tmp_path / "w", "d", {"zeroshot": _zero_shot_metrics(3)}).write()
    EvalResult(tmp_path, tmp_path / "w", "d", {"zeroshot": {"top1": 0.2}}).write()
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["summary.json", "zeroshot.json"]


def test_metric_helpers() -> None:
    metrics = {"t": {"top1": 0.5, "match": "pair", "predictions": [{"index": 0}], "by": {"a": 1}}}
    assert without_item_lists(metrics) == {"t": {"top1": 0.5, "match": "pair", "by": {"a": 1}}}
    assert scalar_metrics(metrics["t"]) == {"top1": 0.5, "match": "pair"}


def test_first_hit_ranks_by_hand() -> None:
    similarity = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.0, 0.4, 0.8]])
    groups = torch.tensor([0, 1, 2])
    # query 0: its item scores 0.1, below 0.9 and 0.5 -> rank 3; query 1: 0.2 below 0.3 -> 2; query 2: best
    assert first_hit_ranks(similarity, groups, groups).tolist() == [3, 2, 1]
    assert first_hit_ranks(similarity, torch.tensor([0, 0, 5]), torch.tensor([1, 0, 2])).tolist() == [1, 2, 4]


def test_recall_from_first_hit_ranks_matches_retrieval_recall() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=1)
    groups = torch.arange(40) % 7  # label matching: several hits per query
    recall = retrieval_recall(images, texts, groups, groups, (1, 5, 10))
    rows = retrieval_rows(images, texts, groups, groups, 10)
    for direction in ("image_to_text", "text_to_image"):
        ranks = [r["first_hit_rank"] for r in rows if r["direction"] == direction]
        for k in (1, 5, 10):
            assert recall_at(ranks, k) == pytest.approx(recall[f"{direction}_R@{k}"])
    assert all(len(r["retrieved"]) == 10 for r in rows)


def test_confusion_matrix_by_hand() -> None:
    assert confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_plots_only_where_they_apply(tmp_path: Path) -> None:
    assert write_plots("zeroshot", _zero_shot_metrics(MAX_PLOTTED_CLASSES + 1, 200), tmp_path) == []
    assert write_plots("compositional", {"predictions": [{"index": 0}]}, tmp_path) == []
    rows = retrieval_rows(torch.eye(4), torch.eye(4), torch.arange(4), torch.arange(4), 2)
    (written,) = write_plots("retrieval", {"predictions": rows}, tmp_path)
    assert written.name == "retrieval.recall.png" and written.stat().st_size > 0
    with Image.open(written) as image:
        assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrieval.recall.png"]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[{"question_id": 1,\n "answer": }]')
    with pytest.raises(UserError, match=r"p.json: not valid JSON at line 2, column 12"):
        read_document(path, "predictions")
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError, match=r"p.jsonl: not valid JSON at line 3"):
        read_document(lines, "predictions")


def test_json_lines_in_a_json_file_and_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "questions.json"
    path.write_text('{"question_id": 1}\n{"question_id": 2}\n')
    assert read_records(path, "references") == [{"question_id": 1}, {"question_id": 2}]
    path.write_text('{"images": []}')
    with pytest.raises(UserError, match="no field 'annotations'"):
        read_records(path, "references", "annotations")
    path.write_text("[1, {}]")
    with pytest.raises(UserError, match=r"1 items are not JSON objects \(items 0"):
        read_records(path, "references")
    with pytest.raises(UserError, match="not found"):
        read_records(tmp_path / "none.json", "references")


def test_match_ids_reports_missing_extra_duplicates_ids_as_text() -> None:
    match = match_ids([1, "2", 2, 9, 9, 9], [1, 2, 3, 4])
    assert match.duplicate == ["2", 9] and match.extra == [9] and match.missing == [3, 4]


def test_score_reports_every_id_problem_at_once(tmp_path: Path) -> None:
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"question_id": i, "label": "yes"}) + "\n" for i in range(3)))
    preds = tmp_path / "preds.jsonl"
    answers = [(0, "Yes"), (0, "No"), (7, "no")]
    preds.write_text("".join(json.dumps({"question_id": i, "text": t}) + "\n" for i, t in answers))
    with pytest.raises(UserErrors) as raised:
        score("pope", preds, refs)
    messages = [p.message for p in raised.value.problems]
    assert len(messages) == 3 and "(0)" in messages[0] and "(7)" in messages[1] and "(1, 2)" in messages[2]
    with pytest.raises(UserError, match="unknown task 'gqa'"):
        score("gqa", preds, refs)


def test_run_cost_planned_and_measured(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text(
        json.dumps({"devices": 8, "accelerator": "h100-sxm", "wall_hours": 2.0, "usd": 50.0})
    )
    (tmp_path / "actual.json").write_text(json.dumps({"wall_seconds": 5400, "world_size": 8}))
    cost = run_cost(tmp_path)
    price = load_catalog()["h100-sxm"].usd_per_hour
    assert cost["plan.gpu_hours"] == 16.0 and cost["plan.usd"] == 50.0
    assert cost["actual.wall_hours"] == 1.5 and cost["actual.gpu_hours"] == 12.0
    assert cost["actual.usd"] == pytest.approx(12.0 * price)
    assert set(run_cost(None).values()) == {None}


def test_default_command_group_sends_other_first_arguments_to_the_default_command() -> None:
    group = typer.Typer(cls=DefaultCommandGroup, help="the group")

    @group.command("run")
    def run(overrides: list[str] | None = typer.Argument(None), flag: str = "-") -> None:
        print("run", overrides, flag)

    @group.command("score")
    def score(task: str) -> None:
        print("score", task)

    runner = CliRunner()
    assert runner.invoke(group, ["a=b", "--flag", "x"]).output == "run ['a=b'] x\n"
    assert runner.invoke(group, ["--flag", "y", "score"]).output == "run ['score'] y\n"
    assert runner.invoke(group, []).output == "run None -\n"
    assert runner.invoke(group, ["score", "pope"]).output == "score pope\n"
    listed = runner.invoke(group, ["--help"]).output
    assert "the group" in listed and "score" in listed
