"""`vlmforge plan` (and `vlmforge eval`) given nonsense: flags, catalog and published-runs files with unusable
numbers or bytes, limits that exclude every configuration, an align recipe's suggested command, preference
data on a finetune run. Each case: the exit code, a message naming the flag, file, line or column, no
traceback, nothing written; every JSON output is parsed strictly (no bare NaN or Infinity)."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import last_json, run_cli
from tests.hostile.checks import files_under, no_traceback
from vlmforge.planning.prior import BUNDLED_RUNS

HEADER = (
    "name,bf16_tflops,fp16_tflops,fp32_tflops,memory_gb,interconnect,usd_per_hour,price_date,price_source\n"
)


def strict_json(stdout: str) -> dict[str, Any]:
    """The last line of stdout parsed as strict JSON: a bare NaN or Infinity fails the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: bare {constant} in the output")

    return json.loads(stdout.strip().splitlines()[-1], parse_constant=refuse)


def refused(tmp_path: Path, *args: str) -> str:
    """``vlmforge ARGS`` must exit 2 without a traceback and without writing anything; its stderr."""
    before = files_under(tmp_path)
    proc = run_cli(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    no_traceback(proc.stderr)
    assert files_under(tmp_path) == before
    return proc.stderr


# 1. numeric flags: negative, zero, NaN, infinite
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--budget-usd", "-5"),
        ("--budget-usd", "nan"),
        ("--deadline-hours", "0"),
        ("--deadline-hours", "-inf"),
        ("--gpus", "0,8"),
    ],
)
def test_plan_flags_that_make_no_sense_exit_2_naming_the_flag(flag: str, value: str, tmp_path: Path) -> None:
    stderr = refused(tmp_path, "plan", "-c", "debug/clip-tiny", f"{flag}={value}")
    shown = value.split(",")[0]
    assert f"error: {flag} {shown}" in stderr and "hint:" in stderr


# 2. catalog rows with unusable numbers; catalog and published files that are not UTF-8
def test_a_catalog_with_unusable_numbers_exits_2_naming_file_line_and_column(tmp_path: Path) -> None:
    catalog = tmp_path / "prices.csv"
    catalog.write_text(
        "# my prices\n"
        + HEADER
        + "cheap,312,312,156,80,nvlink,-1,2025-01,x\n"
        + "foggy,312,312,156,nan,nvlink,1,2025-01,x\n"
        + "idle,0,312,156,80,nvlink,1,2025-01,x\n"
    )
    stderr = refused(tmp_path, "plan", "-c", "debug/clip-tiny", "--catalog", str(catalog), "--gpu", "cheap")
    for line, column in ((3, "usd_per_hour"), (4, "memory_gb"), (5, "bf16_tflops")):
        assert f"{catalog}: line {line}, column {column}:" in stderr


@pytest.mark.parametrize("flag", ["--catalog", "--published"])
def test_a_csv_that_is_not_utf8_exits_2_naming_the_byte_offset(flag: str, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    head = HEADER.encode() if flag == "--catalog" else BUNDLED_RUNS.read_bytes().splitlines()[0] + b"\n"
    path.write_bytes(head + "café,1\n".encode("latin-1"))
    args = (
        ("plan", "-c", "debug/clip-tiny", flag, str(path))
        if flag == "--catalog"
        else ("plan", flag, str(path))
    )
    stderr = refused(tmp_path, *args)
    assert (
        f"{path}: not UTF-8 text: byte offset {len(head) + 3}" in stderr
        and "UnicodeDecodeError" not in stderr
    )


# 3. a budget or deadline that excludes every configuration says why
def test_limits_that_exclude_every_row_say_why(tmp_path: Path) -> None:
    proc = run_cli("plan", "-c", "debug/clip-tiny", "--budget-usd", "1e-9", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = strict_json(proc.stdout)
    assert plan["cheapest"] is None and plan["fastest"] is None
    assert "costs $" in plan["no_pick_reason"] and "above --budget-usd $1e-09" in plan["no_pick_reason"]
    table = run_cli("plan", "-c", "debug/clip-tiny", "--deadline-hours", "1e-12", cwd=tmp_path, check=True)
    assert "no pick: the fastest configuration that fits" in table.stdout
    assert "beyond --deadline-hours 1e-12" in table.stdout
    no_traceback(proc.stderr + table.stderr)


# 4 and 7. garbage published rows: skipped with a reason each, out of the median error; strict JSON
def test_published_rows_with_unusable_numbers_are_skipped_with_their_reason(tmp_path: Path) -> None:
    with BUNDLED_RUNS.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = next(r for r in rows if r["name"].startswith("OpenCLIP ViT-B/32 LAION-400M"))
    changes = [
        {"name": "negative", "accel_hours": "-4600", "wall_hours": "-36"},
        {"name": "nan samples", "samples_seen": "NaN"},
        {"name": "zero gpus", "accel_count": "0"},
        {"name": "no count", "accel_count": ""},  # predicted wall hours: was a bare NaN in the JSON
    ]
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(base))
        writer.writeheader()
        writer.writerows([base, *({**base, **change} for change in changes)])
    proc = run_cli("plan", "--published", str(path), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = strict_json(proc.stdout)
    by_name = {row["name"]: row for row in report["rows"]}
    assert by_name["negative"]["note"] == (
        "skipped (line 3): wall_hours -36 must be above 0; accel_hours -4600 must be above 0"
    )
    assert by_name["nan samples"]["note"] == "skipped (line 4): samples_seen 'NaN' is not a finite number"
    assert by_name["zero gpus"]["note"] == "skipped (line 5): accel_count 0 must be above 0"
    no_count = by_name["no count"]  # the count is assumed (global batch / 256) and said so, never NaN
    assert no_count["assumptions"] == ["accel_count blank: 128 assumed"]
    assert no_count["predicted_wall_hours"] == pytest.approx(no_count["predicted_accel_hours"] / 128)
    assert report["metrics"]["rows_skipped"] == 3 and report["metrics"]["rows_compared"] == 2
    assert report["metrics"]["median_abs_pct_error"] == pytest.approx(by_name[base["name"]]["abs_pct_error"])
    table = run_cli("plan", "--published", str(path), cwd=tmp_path, check=True)
    assert "skipped (line 5): accel_count 0 must be above 0" in table.stdout
    assert "3 row(s) skipped" in table.stdout
    no_traceback(proc.stderr + table.stderr)


# 5. an align recipe's suggested command names `vlmforge align`, and it loads back as planned
def test_plan_of_an_align_recipe_suggests_a_command_that_loads(tmp_path: Path) -> None:
    proc = run_cli("plan", "-c", "debug/llava-dpo-tiny", "--gpus", "1,2", cwd=tmp_path, check=True)
    lines = [line for line in proc.stdout.splitlines() if "-c RECIPE" in line]
    assert lines and "vlmforge pretrain" not in proc.stdout
    command = lines[0].split(": ", 1)[1]
    assert command.startswith("vlmforge align -c RECIPE ")
    words = shlex.split(command.replace("RECIPE", "debug/llava-dpo-tiny"))[1:]
    loaded = run_cli(*words, "--print-config", cwd=tmp_path, check=True)
    train = yaml.safe_load(loaded.stdout)["train"]
    overrides = dict(word.split("=", 1) for word in words if "=" in word)
    assert str(train["devices"]) == overrides["train.devices"]
    assert str(train["micro_batch_size"]) == overrides["train.micro_batch_size"]
    no_traceback(proc.stderr + loaded.stderr)


# 6. preference data on a finetune run
@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A four-step debug LLaVA finetune run (seconds): only its run directory is read."""
    cwd = tmp_path_factory.mktemp("finetune-run")
    short = ("stages.0.max_steps=2", "stages.1.max_steps=2", "eval=[]", "--format", "json")
    proc = run_cli("finetune", "-c", "debug/llava-tiny", *short, cwd=cwd, check=True)
    return cwd / last_json(proc.stdout)["run_dir"]


def test_preference_data_on_a_finetune_run_exits_2_saying_it_evaluates_align_runs(
    finetune_run: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"run: {finetune_run}\ndata: {{kind: digits-preferences}}\n")
    before = files_under(finetune_run)
    stderr = refused(tmp_path, "eval", "-c", str(recipe), "tasks=[{kind: preference}]")
    assert "data.kind 'digits-preferences': preference pairs evaluate an align run" in stderr
    assert "tasks: 'preference' evaluates an align run" in stderr
    assert "llava-json or digits-conversations" in stderr and "AttributeError" not in stderr
    assert files_under(finetune_run) == before  # no eval/ results written
