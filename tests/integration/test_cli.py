"""The CLI as a user runs it: real subprocesses, real files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import DEBUG_RECIPE, last_json, read_metrics, run_cli


def test_help_lists_verbs(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path, check=True)
    for verb in ("pretrain", "eval", "validate", "recipes"):
        assert verb in proc.stdout


def test_recipes_ls_show_cp_schema(tmp_path: Path) -> None:
    listing = last_json(run_cli("recipes", "ls", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert "demo/clip-digits" in listing["recipes"]
    shown = run_cli("recipes", "show", "clip-tiny", cwd=tmp_path, check=True).stdout
    assert yaml.safe_load(shown)["name"] == "clip-tiny"

    run_cli("recipes", "cp", "debug/clip-tiny", str(tmp_path / "mine.yaml"), cwd=tmp_path, check=True)
    assert (tmp_path / "mine.yaml").read_text() == shown
    (tmp_path / "mine.yaml").write_text(shown + "# my edits\n")
    again = run_cli("recipes", "cp", "debug/clip-tiny", str(tmp_path / "mine.yaml"), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "mine.yaml").read_text().endswith("# my edits\n")  # nothing overwritten

    schema = json.loads(run_cli("recipes", "schema", "pretrain", cwd=tmp_path, check=True).stdout)
    assert schema["title"] == "PretrainRecipe"
    unknown = run_cli("recipes", "show", "clip-tinny", cwd=tmp_path)
    assert unknown.returncode == 2 and "debug/clip-tiny" in unknown.stderr


def _bad_input(tmp_path: Path, *args: str) -> str:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) < 25  # one screen
    return proc.stderr


def test_typo_key_exits_2_naming_it(tmp_path: Path) -> None:
    recipe = yaml.safe_load(DEBUG_RECIPE.read_text())
    recipe["optim"]["learning_rate"] = recipe["optim"].pop("lr")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(recipe))
    stderr = _bad_input(tmp_path, "validate", "-c", "typo.yaml")
    assert "optim.learning_rate" in stderr and "unknown key" in stderr


def test_wrong_type_exits_2_naming_it(tmp_path: Path) -> None:
    stderr = _bad_input(tmp_path, "pretrain", "-c", str(DEBUG_RECIPE), "data.batch_size=lots")
    assert "data.batch_size" in stderr and "'lots'" in stderr
    assert not (tmp_path / "runs").exists()


def test_missing_data_path_exits_2_naming_it(tmp_path: Path) -> None:
    stderr = _bad_input(
        tmp_path, "pretrain", "-c", str(DEBUG_RECIPE), "data.kind=folder", f"data.path={tmp_path / 'nowhere'}"
    )
    assert "nowhere" in stderr and "data.path" in stderr
    assert not (tmp_path / "runs").exists()  # nothing created for a run that cannot start


def test_malformed_yaml_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [oops\n")
    assert "line" in _bad_input(tmp_path, "validate", "-c", "bad.yaml")


def test_print_config_resolves_every_default(tmp_path: Path) -> None:
    proc = run_cli(
        "pretrain", "-c", str(DEBUG_RECIPE), "optim.lr=1e-3", "--print-config", cwd=tmp_path, check=True
    )
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["optim"]["lr"] == 1e-3
    assert resolved["train"]["precision"] == "32"
    assert not (tmp_path / "runs").exists()
    validated = run_cli(
        "validate", "-c", str(DEBUG_RECIPE), "seed=7", "--print-config", cwd=tmp_path, check=True
    )
    assert yaml.safe_load(validated.stdout)["seed"] == 7


def test_pretrain_writes_a_complete_run_dir(tiny_run: dict[str, Any]) -> None:
    run_dir: Path = tiny_run["run_dir"]
    assert tiny_run["status"] == "completed" and tiny_run["steps"] == 60
    for name in (
        "recipe.yaml",
        "manifest.json",
        "metrics.jsonl",
        "tokenizer.json",
        "actual.json",
        "result.json",
    ):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["data_fingerprint"] and "torch" in manifest["packages"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step-00000040.ckpt", "step-00000060.ckpt"]  # keep_last: 2
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["name"] == "clip-tiny"


def test_pretrain_loss_falls(tiny_run: dict[str, Any]) -> None:
    losses = [record["loss"] for record in read_metrics(tiny_run["run_dir"])]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.2, losses


def test_eval_reproduces_pretrain_metrics(tiny_run: dict[str, Any]) -> None:
    proc = run_cli(
        "eval", "--run", str(tiny_run["run_dir"]), "--format", "json", cwd=tiny_run["cwd"], check=True
    )
    result = last_json(proc.stdout)
    assert result["metrics"]["zeroshot"]["top1"] == tiny_run["metrics"]["eval"]["zeroshot"]["top1"]
    assert result["metrics"]["retrieval"]["image_to_text_R@1"] > 0
    saved = json.loads((tiny_run["run_dir"] / "eval" / "zeroshot.json").read_text())
    assert saved["metrics"]["top1"] == result["metrics"]["zeroshot"]["top1"]


def test_eval_on_a_user_folder_dataset(tiny_run: dict[str, Any], digits_folder: Path, tmp_path: Path) -> None:
    recipe = {"run": str(tiny_run["run_dir"]), "data": {"kind": "folder", "path": str(digits_folder)}}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_cli(
        "eval",
        "-c",
        "eval.yaml",
        "tasks=[{kind: retrieval, match: pair}]",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    metrics = last_json(proc.stdout)["metrics"]
    assert set(metrics) == {"retrieval"}
    assert metrics["retrieval"]["match"] == "pair" and metrics["retrieval"]["samples"] == 120
    table = run_cli("eval", "-c", "eval.yaml", cwd=tmp_path, check=True)
    assert "zeroshot" in table.stdout and "top1" in table.stdout


def test_eval_needs_a_run(tmp_path: Path) -> None:
    assert "not a run directory" in _bad_input(tmp_path, "eval", "--run", str(tmp_path))


def test_bf16_with_gradient_accumulation_trains(tmp_path: Path) -> None:
    proc = run_cli(
        "pretrain",
        "-c",
        str(DEBUG_RECIPE),
        "train.precision=bf16-mixed",
        "train.micro_batch_size=16",
        "train.max_steps=20",
        "eval=[]",
        "--format",
        "json",
        cwd=tmp_path,
        check=True,
    )
    result = last_json(proc.stdout)
    records = read_metrics(tmp_path / result["run_dir"])
    assert result["steps"] == 20 and records[-1]["step"] == 20  # 40 micro-batches of 16 -> 20 steps of 32
    assert all(0 < r["loss"] < 10 for r in records)
    assert yaml.safe_load((tmp_path / result["run_dir"] / "recipe.yaml").read_text())["train"][
        "precision"
    ] == ("bf16-mixed")


def test_missing_optional_logger_gives_install_hint(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        import pytest

        pytest.skip("wandb is installed here")
    stderr = _bad_input(tmp_path, "pretrain", "-c", str(DEBUG_RECIPE), "logger.kind=wandb")
    assert "vlmforge[wandb]" in stderr
    assert not (tmp_path / "runs").exists()


def test_siglip_debug_recipe_trains_and_evaluates(tmp_path: Path) -> None:
    result = last_json(
        run_cli("pretrain", "-c", "debug/siglip-tiny", "--format", "json", cwd=tmp_path, check=True).stdout
    )
    records = read_metrics(tmp_path / result["run_dir"])
    assert records[-1]["loss"] < records[0]["loss"] - 0.2, [r["loss"] for r in records]
    assert "sigmoid" in records[-1] and "logit_bias" in records[-1]  # terms logged by name
    assert result["metrics"]["eval"]["zeroshot"]["top1"] > 0.2  # chance is 0.1


def test_flip_debug_recipe_masks_then_tunes_unmasked(tmp_path: Path) -> None:
    result = last_json(
        run_cli("pretrain", "-c", "debug/flip-tiny", "--format", "json", cwd=tmp_path, check=True).stdout
    )
    losses = [r["loss"] for r in read_metrics(tmp_path / result["run_dir"])]
    assert losses[-1] < losses[0] - 0.2, losses
    assert result["metrics"]["eval"]["zeroshot"]["top1"] > 0.2
