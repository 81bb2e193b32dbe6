"""Planner: FLOP counts against formulas, measured activations, memory by strategy, plans, published runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.planning.calibrate import calibrate
from vlmforge.planning.prior import BUNDLED_RUNS, load_time_model
from vlmforge.verbs import plan

WIDTH, LAYERS, SIDE, PATCH, CTX = 256, 4, 64, 8, 32


def test_published_mode_on_a_fixture_csv(tmp_path: Path) -> None:
    source = BUNDLED_RUNS
    with source.open() as handle:
        rows = list(csv.DictReader(handle))
    picked = [
        r for r in rows if r["name"].startswith(("OpenCLIP ViT-B/32 LAION-400M", "LLaVA-1.5-7B stage 1"))
    ]
    picked.append({**picked[0], "name": "unknown tower", "vision_arch": "MysteryNet"})
    fixture = tmp_path / "runs.csv"
    columns = [c for c in picked[0] if c != "source_citation"]  # any subset of the columns works
    with fixture.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picked)
    report = last_json(
        run_cli("plan", "--published", str(fixture), "--format", "json", cwd=tmp_path, check=True).stdout
    )
    by_name = {row["name"]: row for row in report["rows"]}
    assert len(by_name) == 3
    clip = by_name[picked[0]["name"]]
    assert clip["predicted_accel_hours"] == pytest.approx(4600, rel=0.5)  # published: 4,600 A100-hours
    assert clip["predicted_wall_hours"] == pytest.approx(clip["predicted_accel_hours"] / 128)
    assert by_name["unknown tower"]["predicted_accel_hours"] is None and "note" in by_name["unknown tower"]
    assert report["metrics"]["rows_compared"] == 2 and report["metrics"]["median_abs_pct_error"] < 100


def test_plan_cli_table_and_bad_accelerator(tmp_path: Path) -> None:
    proc = run_cli(
        "plan",
        "-c",
        "clip/vit-b-16",
        "--gpu",
        "a100-80gb,h100-sxm",
        "--gpus",
        "8,64",
        "--plot",
        "cost.png",
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "a100-80gb" in proc.stdout and "GFLOPs per sample" in proc.stdout
    bad = run_cli("plan", "-c", "clip/vit-b-16", "--gpu", "a100-80", cwd=tmp_path)
    assert bad.returncode == 2 and "a100-80gb" in bad.stderr and "Traceback" not in bad.stderr


def test_every_run_saves_its_plan(tiny_run: dict) -> None:
    import json

    saved = json.loads((tiny_run["run_dir"] / "plan.json").read_text())
    assert saved["device"] == "cpu" and saved["total_flops"] > 0
    assert saved["samples_seen"] == 60 * 32
    assert tiny_run["stderr"].startswith("plan: ")


def test_calibration_times_real_steps_and_feeds_later_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLMFORGE_CACHE", str(tmp_path))
    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"))
    calibration = calibrate(recipe, micro_batch=16, steps=3)
    assert calibration.device.startswith("cpu") and calibration.median_step_seconds > 0
    assert 0 < calibration.measured_mfu < 1.5  # matmul peak is measured, small models may beat it slightly
    # the digits are on this machine: their loader and vlmforge's callbacks fed the timed steps
    assert calibration.loop == "recipe data"
    assert (tmp_path / "calibration.json").is_file()

    # A calibration for a catalog device replaces the prior for that device only.
    from vlmforge.planning.calibrate import Calibration, save_calibration

    save_calibration(Calibration("a100-80gb", "32", "contrastive", 16, 1.0, 1.0, 1.0, 0.5, None))
    result = plan.run(recipe, ["a100-80gb", "h100-sxm"], [1])
    assert result.calibrations == {"a100-80gb": 0.5}
    rows = {row.accelerator: row for row in result.rows}
    model = load_time_model()
    steps = result.samples_seen / recipe.batch_plan().global_batch

    def one_gpu_hours(mfu: float, peak: float) -> float:  # one GPU: no communication
        per_step = (
            recipe.batch_plan().global_batch * result.flops_per_sample / (peak * mfu) + model.per_step_s
        )
        return steps * per_step / 3600 + model.per_run_h

    assert rows["a100-80gb"].accel_hours == pytest.approx(one_gpu_hours(0.5, 156e12))  # A100 TF32, fp32
    assert rows["h100-sxm"].accel_hours == pytest.approx(one_gpu_hours(result.mfu, 494e12))


def test_refit_learns_utilisation_from_finished_runs(tiny_run: dict, tmp_path: Path) -> None:
    proc = run_cli(
        "plan", "--refit", str(tiny_run["run_dir"].parent), "--format", "json", cwd=tmp_path, check=True
    )
    (fitted,) = last_json(proc.stdout)["calibrations"]
    assert fitted["device"].startswith("cpu-") and fitted["family"] == "contrastive"
    assert 0 < fitted["measured_mfu"] < 1.5
    assert fitted["median_step_seconds"] > 0
    empty = run_cli("plan", "--refit", str(tmp_path), cwd=tmp_path)
    assert empty.returncode == 2 and "no finished runs" in empty.stderr


def _strict_json(stdout: str) -> dict:
    """The final JSON object of stdout, parsed strictly: a bare NaN or Infinity fails."""
    import json

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: bare {constant}")

    return json.loads(stdout.strip().splitlines()[-1], parse_constant=refuse)


@pytest.mark.parametrize(
    "mode", ["recipe", pytest.param("calibrate", marks=pytest.mark.slow), "published", "refit"]
)
def test_every_plan_mode_prints_strict_json(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("VLMFORGE_CACHE", str(tmp_path / "cache"))  # a calibration stays in this test
    if mode == "published":  # a run without its accelerator count: an assumed count, stated (was NaN)
        with BUNDLED_RUNS.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        base = next(r for r in rows if r["name"].startswith("OpenCLIP ViT-B/32 LAION-400M"))
        fixture = tmp_path / "runs.csv"
        with fixture.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(base))
            writer.writeheader()
            writer.writerows([base, {**base, "name": "no count", "accel_count": ""}])
        args = ["--published", str(fixture)]
    elif mode == "refit":
        args = ["--refit", str(request.getfixturevalue("tiny_run")["run_dir"].parent)]
    else:  # a budget no configuration meets: no pick, and the reason
        args = ["-c", "debug/clip-tiny", "--gpus", "1,2", "--budget-usd", "1e-12"]
        args += ["--calibrate"] if mode == "calibrate" else []
    proc = run_cli("plan", *args, "--format", "json", cwd=tmp_path, check=True)
    payload = _strict_json(proc.stdout)
    if mode == "published":
        assert payload["rows"][1]["assumptions"] == ["accel_count blank: 128 assumed"]  # 32768 / 256
    elif mode == "refit":
        assert payload["calibrations"]
    else:
        assert payload["cheapest"] is None and "--budget-usd" in payload["no_pick_reason"]
        assert ("calibration" in payload) == (mode == "calibrate")
