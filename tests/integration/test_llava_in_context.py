"""In-context instruction tuning from the CLI: a few steps of debug/llava-icl-tiny, its k-shot evaluation
(result JSON, per-query predictions, plot), the same numbers from `vlmforge eval`, and what trained."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.shipped import find_recipe

pytest.importorskip("transformers")

TINY = find_recipe("debug/llava-icl-tiny")
SHORT = ("stages.0.max_steps=4", "stages.0.data.count=120", "stages.0.batch_size=8", "eval.0.max_samples=6")
SHORT += ("train.log_every_steps=1",)
SHOTS = (0, 1, 2, 4)


@pytest.fixture(scope="module")
def icl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    cwd = tmp_path_factory.mktemp("icl-run")
    proc = run_cli("finetune", "-c", str(TINY), *SHORT, "--format", "json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    return cwd / result["run_dir"], {**result, "stderr": proc.stderr}


def test_finetune_writes_k_shot_results_and_plot(icl_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, result = icl_run
    assert result["status"] == "completed" and result["steps"] == 4
    metrics = json.loads((run_dir / "eval" / "in_context.json").read_text())["metrics"]
    assert metrics["shots"] == list(SHOTS) and metrics["queries"] == 6
    rows = [json.loads(line) for line in (run_dir / "eval" / "in_context.predictions.jsonl").open()]
    assert [row["shots"] for row in rows] == [k for k in SHOTS for _ in range(6)]
    for k in SHOTS:  # each accuracy is the mean of its rows' exact-match scores
        scores = [row["score"] for row in rows if row["shots"] == k]
        assert metrics[f"accuracy_{k}shot"] == pytest.approx(sum(scores) / 6)
    digit_names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert {row["reference"] for row in rows} <= digit_names
    assert len({row["reference"] for row in rows if row["shots"] == 0}) > 1  # different queries
    plot = (run_dir / "eval" / "in_context.shots.png").read_bytes()
    assert plot.startswith(b"\x89PNG") and len(plot) > 2000
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["tasks"]["in_context"]["accuracy_4shot"] == metrics["accuracy_4shot"]


def test_eval_verb_repeats_the_k_shot_numbers(icl_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run_dir, result = icl_run
    proc = run_cli("eval", "--run", str(run_dir), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = last_json(proc.stdout)["metrics"]["in_context"]
    trained = result["metrics"]["eval"]["in_context"]
    for k in SHOTS:  # greedy decoding of the same held-out samples: deterministic
        assert evaluated[f"accuracy_{k}shot"] == pytest.approx(trained[f"accuracy_{k}shot"])


def test_the_stage_trains_projector_and_llm_only(icl_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, result = icl_run
    line = re.search(r"trainable parameters: ([\d,]+) of ([\d,]+)", result["stderr"])
    assert line is not None
    trainable, total = (int(group.replace(",", "")) for group in line.groups())
    assert 0 < trainable < total  # the vision encoder stays frozen
    rows = [json.loads(row) for row in (run_dir / "stages" / "in-context" / "metrics.jsonl").open()]
    logged = [row for row in rows if "loss" in row]
    assert len(logged) == 4 and all(0 < row["loss"] < 20 for row in logged)
    # the loss is on the query's answer only: one digit name and </s> per sample, whatever the context
    assert all(row["answer_tokens"] == 2 * 8 for row in logged)
