"""Recipe loggers (one section or a list; each package checked before a run), MLflow's offline default,
and evaluation during training: where it applies, what is kept of a task's metrics, and that it leaves the
model's mode and the random generators as it found them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from tests.conftest import DEBUG_RECIPE, LLAVA_RECIPE
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import CsvLogger, NoLogger, TensorBoardLogger, WandbLogger
from vlmforge.errors import UserError
from vlmforge.runs.preflight import preflight
from vlmforge.training.loggers import build_loggers, numeric
from vlmforge.training.periodic_eval import evaluate_in_eval_mode, logged_names, scalar_metrics
from vlmforge.training.requirements import check_loggers_installed


def test_one_logger_section_is_a_list_of_one() -> None:
    assert load_recipe("pretrain", DEBUG_RECIPE).logger == []
    single = load_recipe("pretrain", DEBUG_RECIPE, ["logger.kind=wandb"]).logger
    assert single == [WandbLogger()]
    listed = load_recipe(
        "pretrain", DEBUG_RECIPE, ["logger=[{kind: csv}, {kind: tensorboard}, {kind: none}]"]
    )
    assert listed.logger == [CsvLogger(), TensorBoardLogger(), NoLogger()]


def test_a_logger_kind_listed_twice_is_refused() -> None:
    with pytest.raises(UserError, match="logger kind csv is listed more than once"):
        load_recipe("pretrain", DEBUG_RECIPE, ["logger=[{kind: csv}, {kind: csv}]"])


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_logger_package_names_its_extra(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == kind else real(name, *a)
    )
    recipe = load_recipe("pretrain", DEBUG_RECIPE, [f"logger=[{{kind: csv}}, {{kind: {kind}}}]"])
    with pytest.raises(UserError) as info:
        check_loggers_installed(recipe.logger)
    assert info.value.hint == f"pip install 'vlmforge[{kind}]'"
    (problem,) = preflight(recipe)  # what the training verbs and `vlmforge validate` run first
    assert problem.hint == info.value.hint


class FakeMlflowClient:
    """Stands in for mlflow.tracking.MlflowClient (mlflow is not installed here): records the URI."""

    uris: ClassVar[list[str]] = []

    def __init__(self, tracking_uri: str) -> None:
        self.uris.append(tracking_uri)


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import lightning.pytorch.loggers.mlflow as lightning_mlflow

    package = types.ModuleType("mlflow")
    package.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = FakeMlflowClient  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", package)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", tracking)
    monkeypatch.setattr(lightning_mlflow, "_MLFLOW_AVAILABLE", True)
    FakeMlflowClient.uris = []
    return FakeMlflowClient.uris


def test_mlflow_is_a_file_store_in_the_run_unless_the_recipe_names_a_server(
    fake_mlflow: list[str], tmp_path: Path
) -> None:
    offline = load_recipe("pretrain", DEBUG_RECIPE, ["logger.kind=mlflow"])
    _csv, logger = build_loggers(offline.logger, tmp_path, "clip-tiny")
    assert fake_mlflow == [(tmp_path / "logs" / "mlflow").resolve().as_uri()]
    assert fake_mlflow[0].startswith("file:")
    assert logger._experiment_name == "vlmforge" and logger._run_name == "clip-tiny"
    server = ["logger.kind=mlflow", "logger.tracking_uri=http://mlflow.internal:5000"]
    build_loggers(load_recipe("pretrain", DEBUG_RECIPE, server).logger, tmp_path, "clip-tiny")
    assert fake_mlflow[-1] == "http://mlflow.internal:5000"


@pytest.mark.parametrize("overrides", [["logger=[{kind: none}, {kind: csv}]"], ["logger.kind=none"], []])
def test_the_csv_logger_is_always_there_once(overrides: list[str], tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    recipe = load_recipe("pretrain", DEBUG_RECIPE, overrides)
    (logger,) = build_loggers(recipe.logger, tmp_path, "clip-tiny")
    assert isinstance(logger, CSVLogger) and Path(logger.root_dir) == tmp_path / "logs" / "csv"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.eval_every_steps=5", "train.strategy.kind=fsdp"], "splits the weights across ranks"),
        (["train.eval_every_steps=5", "eval=[]"], "eval is empty"),
        (["train.eval_every_steps=0"], "train.eval_every_steps"),
    ],
)
def test_eval_during_training_refuses_what_it_cannot_run(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_recipe("pretrain", DEBUG_RECIPE, overrides)


def test_eval_during_training_is_for_pretrain_recipes() -> None:
    with pytest.raises(UserError, match="applies to pretrain recipes"):
        load_recipe("finetune", LLAVA_RECIPE, ["train.eval_every_steps=5"])


def test_scalar_metrics_keep_single_values_only() -> None:
    results: dict[str, dict[str, Any]] = {
        "vqa": {"accuracy": 0.5, "samples": 4, "match": "exact", "predictions": ["a", "b"], "ok": True},
        "retrieval": {"R@1": 0.25, "per_class": {"a": 1.0}},
    }
    kept = scalar_metrics(results)
    assert kept == {"vqa": {"accuracy": 0.5, "samples": 4, "match": "exact"}, "retrieval": {"R@1": 0.25}}
    names = logged_names(kept)
    assert names == {"eval/vqa/accuracy": 0.5, "eval/vqa/samples": 4, "eval/vqa/match": "exact",
                     "eval/retrieval/R@1": 0.25}  # fmt: skip
    assert numeric(names | {"loss": float("nan")}) == {
        "eval/vqa/accuracy": 0.5,
        "eval/vqa/samples": 4.0,
        "eval/retrieval/R@1": 0.25,
    }


def test_evaluation_restores_mode_gradients_and_random_streams() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    seen = {}

    def evaluate(m: torch.nn.Module) -> dict[str, dict[str, Any]]:
        seen["training"], seen["grad"] = m.training, torch.is_grad_enabled()
        torch.rand(5), np.random.rand(5), random.random()  # an evaluation that draws random numbers
        return {"task": {"score": 1.0}}

    def draws() -> tuple[float, float, float]:
        return float(torch.rand(1)), float(np.random.rand()), random.random()

    for seeded in (torch.manual_seed, np.random.seed, random.seed):
        seeded(0)
    expected = draws()
    for seeded in (torch.manual_seed, np.random.seed, random.seed):
        seeded(0)
    assert evaluate_in_eval_mode(model, evaluate) == {"task": {"score": 1.0}}
    assert seen == {"training": False, "grad": False}
    assert model.training and torch.is_grad_enabled()
    assert draws() == expected
