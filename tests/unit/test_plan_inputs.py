"""The planner's inputs checked before they reach a plan: flags, catalog and published-runs CSV files
(numbers, encoding, line numbers), the reason when nothing is picked, strict JSON, the suggested command of
an align recipe, and eval data that a run cannot take."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import EvalRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError, UserErrors
from vlmforge.planning.accelerators import load_catalog
from vlmforge.planning.csvfile import read_csv
from vlmforge.planning.estimate import PlanRow, limit_problems, no_pick_reason
from vlmforge.planning.prior import BUNDLED_RUNS, read_runs, run_shape
from vlmforge.planning.published import compare_published
from vlmforge.verbs import evaluate, plan
from vlmforge_cli.render import plan_table, published_table

HEADER = (
    "name,bf16_tflops,fp16_tflops,fp32_tflops,memory_gb,interconnect,usd_per_hour,price_date,price_source\n"
)


def _problems(error: UserError) -> list[str]:
    return [p.message for p in error.problems] if isinstance(error, UserErrors) else [error.message]


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    ("counts", "budget", "deadline", "named"),
    [
        (None, -5.0, None, ["--budget-usd -5"]),
        (None, math.nan, None, ["--budget-usd nan"]),
        (None, 0.0, None, ["--budget-usd 0"]),
        (None, None, 0.0, ["--deadline-hours 0"]),
        (None, None, -1.0, ["--deadline-hours -1"]),
        (None, None, math.inf, ["--deadline-hours inf"]),
        ([0, 8], math.inf, math.nan, ["--gpus 0", "--budget-usd inf", "--deadline-hours nan"]),
    ],
)
def test_plan_flags_that_make_no_sense_are_refused(
    counts: list[int] | None, budget: float | None, deadline: float | None, named: list[str]
) -> None:
    problems = [p.message for p in limit_problems(counts, budget, deadline)]
    assert len(problems) == len(named)
    for message, flag in zip(problems, named, strict=True):
        assert message.startswith(flag), message
    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    with pytest.raises(UserError):  # the library refuses them too, before planning anything
        plan.run(recipe, ["a100-80gb"], counts, budget, deadline)


def test_sensible_flags_pass() -> None:
    assert limit_problems([1, 8], 0.5, 48.0) == []
    assert limit_problems(None, None, None) == []


# ------------------------------------------------------------------------------------------ catalog
def test_a_catalog_with_unusable_numbers_is_refused_naming_line_and_column(tmp_path: Path) -> None:
    catalog = tmp_path / "prices.csv"
    catalog.write_text(
        "# my negotiated prices\n"
        + HEADER
        + "cheap,312,312,156,80,nvlink,-1,2025-01,x\n"  # line 3: a negative price would be 'cheapest'
        + "\n"
        + "foggy,312,312,156,nan,nvlink,1,2025-01,x\n"  # line 5
        + "idle,0,312,156,80,nvlink,1,2025-01,x\n"  # line 6
        + "pricey,312,312,156,80,nvlink,inf,2025-01,x\n"  # line 7
        + "owned,312,312,156,80,nvlink,0,2025-01,x\n"  # a price of 0 is fine: hardware you own
    )
    with pytest.raises(UserError) as caught:
        load_catalog(catalog)
    problems = _problems(caught.value)
    assert len(problems) == 4
    expected = [(3, "usd_per_hour"), (5, "memory_gb"), (6, "bf16_tflops"), (7, "usd_per_hour")]
    for message, (line, column) in zip(problems, expected, strict=True):
        assert message.startswith(f"{catalog}: line {line}, column {column}:"), message
    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    with pytest.raises(UserError):
        plan.run(recipe, ["cheap"], [1], catalog_path=catalog)


def test_a_catalog_without_a_column_is_refused(tmp_path: Path) -> None:
    catalog = tmp_path / "short.csv"
    catalog.write_text("name,bf16_tflops\nx,1\n")
    with pytest.raises(UserError, match="missing column"):
        load_catalog(catalog)


@pytest.mark.parametrize("which", ["catalog", "published"])
def test_a_file_that_is_not_utf8_names_the_byte_offset(which: str, tmp_path: Path) -> None:
    path = tmp_path / f"{which}.csv"
    head = HEADER.encode() if which == "catalog" else BUNDLED_RUNS.read_bytes().splitlines()[0] + b"\n"
    path.write_bytes(head + b"caf\xe9,1\n")  # Latin-1, as a spreadsheet may save it
    with pytest.raises(UserError) as caught:
        load_catalog(path) if which == "catalog" else read_runs(path)
    assert str(path) in caught.value.message and f"byte offset {len(head) + 3}" in caught.value.message
    assert caught.value.hint is not None and "UTF-8" in caught.value.hint


def test_csv_rows_carry_their_file_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes('\ufeff# note\na,b\n1,2\n\n# more\n3,"two\nlines"\n5\n'.encode())
    rows = read_csv(path, "test file", ("a", "b"), "hint", comments=True)
    assert [(row.line, row.cells) for row in rows] == [
        (3, {"a": "1", "b": "2"}),
        (6, {"a": "3", "b": "two\nlines"}),
        (8, {"a": "5", "b": ""}),  # a short row: the missing cell is empty
    ]


# ---------------------------------------------------------------------------------------- no pick
def _row(name: str, count: int, usd: float, hours: float, fits: bool = True) -> PlanRow:
    return PlanRow(name, count, fits, usd=usd, wall_hours=hours)


ROWS = [_row("a100", 8, 100.0, 10.0), _row("h100", 8, 150.0, 4.0), _row("h100", 64, 0.0, 0.0, fits=False)]


@pytest.mark.parametrize(
    ("budget", "deadline", "says"),
    [
        (50.0, None, ["a100 x 8", "$100.00", "--budget-usd $50.00"]),
        (None, 2.0, ["h100 x 8", "4 h", "--deadline-hours 2"]),
        (120.0, 5.0, ["both", "within --deadline-hours 5", "h100 x 8", "$150.00", "--budget-usd $120.00"]),
    ],
)
def test_no_pick_says_which_limit_excludes_every_row(
    budget: float | None, deadline: float | None, says: list[str]
) -> None:
    reason = no_pick_reason(ROWS, budget, deadline)
    for part in says:
        assert part in reason, reason


def test_a_plan_without_a_pick_says_why_in_the_result_and_the_table() -> None:
    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    result = plan.run(recipe, ["a100-80gb", "h100-sxm"], [1, 8], budget_usd=1e-12)
    assert result.cheapest is None and result.fastest is None
    assert result.no_pick_reason is not None and "--budget-usd $1e-12" in result.no_pick_reason
    assert _strict(json.dumps(result.to_json(), allow_nan=False))["no_pick_reason"] == result.no_pick_reason
    buffer = io.StringIO()
    plan_table(Console(file=buffer, width=300), result)
    assert f"no pick: {result.no_pick_reason}" in buffer.getvalue()
    within = plan.run(recipe, ["a100-80gb"], [1], budget_usd=1.0)
    assert within.cheapest is not None and within.no_pick_reason is None


def test_no_row_fitting_is_a_reason_too() -> None:
    assert "fits in GPU memory" in no_pick_reason([_row("toy", 1, 0.0, 0.0, fits=False)], None, None)


# ------------------------------------------------------------------------------------ published runs
def _published(tmp_path: Path, changes: list[dict[str, str]]) -> Path:
    with BUNDLED_RUNS.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = next(r for r in rows if r["name"].startswith("OpenCLIP ViT-B/32 LAION-400M"))
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(base))
        writer.writeheader()
        writer.writerows([base, *({**base, **change} for change in changes)])
    return path


def test_published_rows_with_unusable_numbers_are_skipped_with_a_reason(tmp_path: Path) -> None:
    bad = [
        {"name": "negative hours", "accel_hours": "-4600"},
        {"name": "nan samples", "samples_seen": "nan"},
        {"name": "no gpus", "accel_count": "0"},
        {"name": "wordy", "wall_hours": "lots"},
        {"name": "kept too much", "kept_patch_fraction": "1.5"},
    ]
    report = compare_published(_published(tmp_path, bad))
    rows = {row["name"]: row for row in report["rows"]}
    good = report["rows"][0]
    assert "abs_pct_error" in good and "note" not in good
    expected = {
        "negative hours": (3, "accel_hours -4600 must be above 0"),
        "nan samples": (4, "samples_seen 'nan' is not a finite number"),
        "no gpus": (5, "accel_count 0 must be above 0"),
        "wordy": (6, "wall_hours 'lots' is not a number"),
        "kept too much": (7, "kept_patch_fraction 1.5 must be at most 1"),
    }
    for name, (line, why) in expected.items():
        row = rows[name]
        assert row["skipped"] is True and row["line"] == line
        assert row["note"] == f"skipped (line {line}): {why}"
        assert row["predicted_accel_hours"] is None and "abs_pct_error" not in row
    # only the valid row is in the median: the negative one cannot pull it towards 0%
    assert report["metrics"]["rows_compared"] == 1 and report["metrics"]["rows_skipped"] == len(bad)
    assert report["metrics"]["median_abs_pct_error"] == pytest.approx(good["abs_pct_error"])
    buffer = io.StringIO()
    published_table(Console(file=buffer, width=400), report)
    assert "skipped (line 3): accel_hours -4600 must be above 0" in buffer.getvalue()
    assert f"{len(bad)} row(s) skipped" in buffer.getvalue()
    _strict(json.dumps(report, allow_nan=False))


def test_published_rows_without_a_prediction_say_why(tmp_path: Path) -> None:
    report = compare_published(
        _published(
            tmp_path,
            [
                {"name": "tpu", "accel": "tpu-v9"},
                {"name": "mystery", "vision_arch": "MysteryNet"},
                {"name": "unpublished", "accel_hours": "", "wall_hours": ""},  # wall x count would do
                {"name": "uncounted", "accel_count": "", "accel_hours": ""},
            ],
        )
    )
    rows = {row["name"]: row for row in report["rows"]}
    assert "'tpu-v9' is not in the accelerator catalog" in rows["tpu"]["note"]
    assert "'MysteryNet'" in rows["mystery"]["note"]
    assert rows["unpublished"]["note"] == "no published accel_hours to compare with"
    assert "accel_count blank: 128 assumed" in rows["uncounted"]["assumptions"]  # 32768 / 256
    assert report["metrics"]["rows_compared"] == 1
    _strict(json.dumps(report, allow_nan=False))  # no NaN arises: the JSON output is strict


def test_a_run_without_an_accelerator_count_or_batch_states_what_is_assumed() -> None:
    accel = load_catalog()["a100-40gb"]
    shape, assumed = run_shape(
        {"accel_count": "", "global_batch": "", "samples_seen": "1e6"}, 1e9, 1e8, 1e8, accel
    )
    assert (shape.devices, shape.global_batch) == (8, 8 * 256)
    assert assumed == ["accel_count blank: 8 assumed", "global_batch blank: 2048 assumed"]
    shape, _ = run_shape({"accel_count": "", "global_batch": "32768"}, 1e9, 1e8, 1e8, accel)
    assert shape.devices == 128  # 256 samples per device
    assert shape.bandwidth_gb_s == accel.inter_node_gb_s  # 128 devices span nodes


# ------------------------------------------------------------------------- the suggested command
def test_plan_of_an_align_recipe_suggests_vlmforge_align_and_its_overrides_load() -> None:
    path = find_recipe("debug/llava-dpo-tiny")
    recipe = load_recipe("align", path)
    result = plan.run(recipe, ["a100-40gb", "h100-sxm"], [1, 2])
    assert result.verb == "align"
    buffer = io.StringIO()
    plan_table(Console(file=buffer, width=300), result)
    commands = [line for line in buffer.getvalue().splitlines() if "-c RECIPE" in line]
    assert commands and all("vlmforge align -c RECIPE" in line for line in commands), commands
    for index in {result.cheapest, result.fastest}:
        assert index is not None
        row = result.rows[index]
        picked = load_recipe("align", path, (row.recipe_overrides or "").split())
        batch = picked.batch_plan()
        assert picked.world_size == row.count
        assert (batch.micro_batch, batch.accumulate) == (row.micro_batch, row.accumulate)


# -------------------------------------------------------------------------------- eval data checks
def _eval(**fields: Any) -> EvalRecipe:
    return EvalRecipe.model_validate({"run": "runs/x/1", **fields})


@pytest.mark.parametrize("kind", ["digits-preferences", "preference-json"])
def test_preference_data_on_a_finetune_run_says_it_evaluates_an_align_run(kind: str) -> None:
    data = {"kind": kind} if kind == "digits-preferences" else {"kind": kind, "path": "p.json"}
    (problem,) = evaluate.input_problems("finetune", _eval(data=data))
    assert problem.message.startswith(f"data.kind {kind!r}: preference pairs evaluate an align run")
    assert "is a finetune run" in problem.message
    assert problem.hint is not None and "llava-json or digits-conversations" in problem.hint
    assert "vqa" in problem.hint


def test_eval_inputs_each_run_kind_takes() -> None:
    preference = {"kind": "digits-preferences"}
    both = evaluate.input_problems("pretrain", _eval(data=preference, tasks=[{"kind": "preference"}]))
    assert [p.message.split(":")[0] for p in both] == ["data.kind 'digits-preferences'", "tasks"]
    assert "image-caption data" in (both[0].hint or "")
    wrong_for_align = evaluate.input_problems("align", _eval(data={"kind": "digits"}))
    assert [p.message for p in wrong_for_align] == [
        "data.kind 'digits': an align run is evaluated on preference pairs"
    ]
    assert evaluate.input_problems("align", _eval(data=preference, tasks=[{"kind": "preference"}])) == []
    assert evaluate.input_problems("finetune", _eval(data={"kind": "digits-conversations"})) == []
    assert evaluate.input_problems("finetune", _eval()) == []
