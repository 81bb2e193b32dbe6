"""Verbs that do not train never import what only training needs: Lightning (and torchmetrics, which it
brings); `validate` and `recipes` not even torch. Checked on the real CLI in a fresh interpreter, by the
modules loaded when it exits (start-up times are measured in benchmarks/startup.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env

TRAINING_ONLY = ("lightning", "lightning.pytorch", "torchmetrics")
PROBE = """
import json, sys
sys.argv = ["vlmforge", *json.loads(sys.argv[1])]
from vlmforge_cli.main import main
try:
    main()
except SystemExit as stop:
    code = stop.code or 0
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded_modules(args: list[str], cwd: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr[-3000:]
    return set(report["modules"])


def digits_shard(path: Path) -> Path:
    from PIL import Image

    with tarfile.open(path, "w") as tar:
        for i in range(8):
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(buffer, format="PNG")
            for name, data in ((f"{i:03d}.png", buffer.getvalue()), (f"{i:03d}.txt", b"a red square")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["recipes", "ls"],
        ["validate", "--schema-only", "-c", "debug/clip-tiny"],
        ["validate", "--schema-only", "-c", "debug/llava-tiny"],
    ],
    ids=" ".join,
)
def test_recipe_verbs_import_no_torch(args: list[str], tmp_path: Path) -> None:
    modules = loaded_modules(args, tmp_path)
    assert "torch" not in modules and not modules & set(TRAINING_ONLY)


def test_validate_runs_the_training_checks_without_lightning(tmp_path: Path) -> None:
    modules = loaded_modules(["validate", "-c", "debug/clip-tiny"], tmp_path)
    assert "torch" in modules  # the memory check counts the model on the meta device
    assert not modules & set(TRAINING_ONLY)


@pytest.mark.parametrize("recipe", ["debug/clip-tiny", "debug/llava-tiny", "debug/coca-tiny"])
def test_plan_does_not_import_lightning(recipe: str, tmp_path: Path) -> None:
    modules = loaded_modules(["plan", "-c", recipe, "--format", "json"], tmp_path)
    assert "torch" in modules  # it counts the real model on the meta device
    assert not modules & set(TRAINING_ONLY)


def test_eval_and_data_check_do_not_import_lightning(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    evaluated = loaded_modules(["eval", "--run", str(tiny_run["run_dir"]), "--format", "json"], tmp_path)
    assert "open_clip" in evaluated and not evaluated & set(TRAINING_ONLY)
    checked = loaded_modules(["data", "check", str(digits_shard(tmp_path / "s.tar"))], tmp_path)
    assert not checked & set(TRAINING_ONLY)
