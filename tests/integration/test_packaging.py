"""The wheel ships the recipes and the planner's data, so an installed vlmforge works outside a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_contains_recipes_and_planner_data(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("vlmforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"vlmforge/_recipes/{p.relative_to(REPO / 'recipes')}" for p in (REPO / "recipes").rglob("*.yaml")
    }
    assert shipped and shipped <= names
    for data in ("accelerators.csv", "prior.json", "published_runs.csv"):
        assert f"vlmforge/planning/{data}" in names
    assert "vlmforge_cli/main.py" in names
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )
    assert "vlmforge = vlmforge_cli.main:main" in entry_points
