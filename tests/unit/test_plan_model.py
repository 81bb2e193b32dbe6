"""The planner's time model term by term, its fit on published runs, the pick and the bottleneck labels."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.planning.accelerators import load_catalog
from vlmforge.planning.bottleneck import bottleneck, loader_images_per_s_per_gpu, pick, record_decode_rate
from vlmforge.planning.prior import BUNDLED_RUNS, load_prior, load_time_model, read_runs
from vlmforge.planning.published import resolve_runs_path
from vlmforge.planning.runflops import (
    DEFAULT_TEXT_TOKENS,
    LLM_PARAMS,
    PROJECTOR_PARAMS,
    QFORMER_PARAMS,
    is_checkpointed,
    row_flops_per_sample,
    row_model_params,
)
from vlmforge.planning.utilisation import (
    MFU_CAP,
    PARAMETER_NAMES,
    RunShape,
    StepTime,
    TimeModel,
    accelerator_hours,
    allreduce_seconds,
    leave_one_out,
    sharded_seconds,
    step_time,
    utilisation,
    wall_hours,
)
from vlmforge.verbs import plan

CALIBRATION_CSV = Path("/work/shared/published_runs_calibration.csv")


def _shape(**changes: float | int | bool) -> RunShape:
    base = {
        "flops_per_sample": 1e12,
        "samples": 1e6,
        "global_batch": 1000,
        "devices": 10,
        "peak_flops": 1e14,
        "trainable_params": 1e9,
        "sharded": False,
        "bandwidth_gb_s": 100.0,
        "model_params": 1e9,
    }
    return RunShape(**(base | changes))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- terms
def test_ring_allreduce_moves_two_n_minus_one_over_n_of_the_payload() -> None:
    # 1 GB over 4 devices at 100 GB/s: 2 * 3/4 * 1e9 / 1e11 = 0.015 s
    assert allreduce_seconds(1e9, 4, 100) == pytest.approx(0.015)
    assert allreduce_seconds(1e9, 1, 100) == 0.0


def test_sharded_training_gathers_parameters_twice_and_reduce_scatters_once() -> None:
    # 1e9 params in 16 bits over 8 devices at 50 GB/s: 3 * 7/8 * 2e9 / 5e10 = 0.105 s
    assert sharded_seconds(1e9, 8, 50) == pytest.approx(0.105)
    shape = _shape(sharded=True, devices=8, bandwidth_gb_s=50.0, accumulate=2)
    model = TimeModel(math.log(0.5), 0.0, 1.0, 0.0, 0.0)
    assert step_time(model, shape).comm_s == pytest.approx(0.21)  # gathered for each micro-batch


def test_step_and_run_add_compute_exposed_communication_and_overheads() -> None:
    model = TimeModel(math.log(0.5), 0.0, 0.4, 0.25, 0.5)
    shape = _shape()
    # compute: 1000 samples x 1e12 FLOPs / (10 devices x 1e14 x 0.5) = 2 s; comm: 4e9 B all-reduce over
    # 10 devices at 100 GB/s = 2 * 0.9 * 4e9 / 1e11 = 0.072 s, 40% exposed = 0.0288 s; overhead 0.25 s
    step = step_time(model, shape)
    assert (step.compute_s, step.comm_s, step.overhead_s) == pytest.approx((2.0, 0.0288, 0.25))
    # 1000 steps x 2.2788 s / 3600 + 0.5 h per run; accelerator-hours: x 10 devices
    assert wall_hours(model, shape) == pytest.approx(1000 * 2.2788 / 3600 + 0.5)
    assert accelerator_hours(model, shape) == pytest.approx(10 * (1000 * 2.2788 / 3600 + 0.5))
    assert step_time(model, shape, mfu=0.25).compute_s == pytest.approx(4.0)  # a calibration replaces it


def test_utilisation_is_a_capped_power_law_in_model_parameters() -> None:
    model = TimeModel(math.log(0.2), 0.1, 0.0, 0.0, 0.0)
    assert utilisation(model, 1e9) == pytest.approx(0.2)
    assert utilisation(model, 1e11) == pytest.approx(0.2 * 100**0.1)
    assert utilisation(model, 1e60) == MFU_CAP


def test_the_parameters_a_sample_passes_through_count_frozen_towers() -> None:
    # mlfoundations/open_clip docs/model_profile.csv @3b37473: ViT-B-32 151.28M parameters in all; image
    # towers of ViT-L-14-336 304.29M and EVA01-g-14 1012.59M
    rows = {row.cells["name"]: row.cells for row in read_runs(BUNDLED_RUNS)}
    assert row_model_params(rows["OpenCLIP ViT-B/32 LAION-400M (e32)"]) == pytest.approx(151.28e6, rel=1e-4)
    llava = 304.29e6 + PROJECTOR_PARAMS + LLM_PARAMS["llama-7b"]  # the frozen LLM counts too
    assert row_model_params(rows["LLaVA-1.5-7B stage 1"]) == pytest.approx(llava, rel=1e-4)
    blip2 = rows["BLIP-2 stage 1 (ViT-g, Q-Former representation learning)"]
    assert row_model_params(blip2) == pytest.approx(1012.59e6 + QFORMER_PARAMS, rel=1e-4)


# ------------------------------------------------------------------------------------- fitted model
def test_catalog_covers_tpus_and_every_accelerator_of_the_calibration_set() -> None:
    catalog = load_catalog()
    assert {"tpu-v3", "tpu-v4", "tpu-v5e", "tpu-v5p"} <= set(catalog)
    assert {row.cells["accel"] for row in read_runs(BUNDLED_RUNS)} <= set(catalog)
    assert catalog["a100-80gb"].bandwidth_gb_s(8) == 300 and catalog["a100-80gb"].bandwidth_gb_s(16) == 6.25


@pytest.mark.skipif(not CALIBRATION_CSV.is_file(), reason="the shared calibration set is not on this machine")
def test_bundled_runs_are_the_calibration_set() -> None:
    assert BUNDLED_RUNS.read_bytes() == CALIBRATION_CSV.read_bytes()


def _hand_step_s(model: TimeModel, shape: RunShape) -> float:
    """The time model's step, recomputed from its formula (not through utilisation.py)."""
    mfu = min(
        MFU_CAP, math.exp(model.log_mfu_at_1b_params) * (shape.model_params / 1e9) ** model.mfu_exponent
    )
    step = shape.global_batch * shape.flops_per_sample / (shape.devices * shape.peak_flops * mfu)
    step += model.exposed_comm * (
        3 * (shape.devices - 1) / shape.devices * shape.trainable_params * 2 / (shape.bandwidth_gb_s * 1e9)
        if shape.sharded
        else 2
        * (shape.devices - 1)
        / shape.devices
        * shape.trainable_params
        * 4
        / (shape.bandwidth_gb_s * 1e9)
    )
    return step + model.per_step_s


def _stages(row: dict[str, Any]) -> list[RunShape]:
    return [RunShape(**stage) for stage in row.get("stages", [row["shape"]])]


def test_every_published_run_gets_a_prediction_from_the_stored_fit() -> None:
    fitted = load_prior()
    model = load_time_model()
    assert len(fitted["runs"]) == len(read_runs(BUNDLED_RUNS))
    assert len(fitted["parameters"]) == len(PARAMETER_NAMES) <= 6
    for row in fitted["runs"]:
        assert row["shape"] is not None, row["name"]
        shape = RunShape(**row["shape"])
        if row["predicted_accel_hours"] is None:  # samples_seen blank: throughput is the prediction
            assert row["predicted_samples_per_device_hour"] == pytest.approx(
                shape.global_batch / shape.devices / _hand_step_s(model, shape) * 3600
            )
            continue
        hours = sum(
            stage.devices
            * (stage.samples / stage.global_batch * _hand_step_s(model, stage) / 3600 + model.per_run_h)
            for stage in _stages(row)
        )
        assert row["predicted_accel_hours"] == pytest.approx(hours, rel=1e-9), row["name"]


def test_a_row_covering_two_stages_is_predicted_stage_by_stage() -> None:
    # haotian-liu/LLaVA scripts/train_lightning.sh @a8c742f: 1 epoch of blip_laion_cc_sbu_558k training the
    # projector alone, then 1 epoch of llava_instruct_80k training projector + LLM with FSDP
    row = next(r for r in load_prior()["runs"] if r["name"] == "LLaVA-Lightning-7B (stage 1 + 2)")
    first, second = _stages(row)
    assert (first.samples, second.samples) == (558_000, 80_000)
    assert first.samples + second.samples == RunShape(**row["shape"]).samples  # the row's samples_seen
    assert first.trainable_params < 1e8 and not first.sharded
    assert second.sharded and second.flops_per_sample > first.flops_per_sample


def test_leave_one_out_statistics_match_a_recomputation() -> None:
    fitted = load_prior()
    used = [row for row in fitted["runs"] if row["used_for_fit"]]
    excluded = [row["name"] for row in fitted["runs"] if not row["used_for_fit"]]
    assert all(
        row["bound"] in ("unreliable", "claim") or row["published_accel_hours"] is None
        for row in fitted["runs"]
        if row["name"] in excluded
    )
    stored = [row["leave_one_out_abs_pct_error"] for row in used]
    assert fitted["leave_one_out_median_abs_pct_error"] == pytest.approx(statistics.median(stored))
    assert fitted["leave_one_out_max_abs_pct_error"] == pytest.approx(max(stored))
    errors = leave_one_out([_stages(r) for r in used], [r["published_accel_hours"] for r in used])
    assert errors == pytest.approx(stored, rel=1e-3)


# --------------------------------------------------------------------------------- pick, bottleneck
def test_pick_is_the_fastest_within_the_slack_of_the_cheapest() -> None:
    wall, usd = [10.0, 2.0, 1.0, 20.0], [5.0, 6.0, 30.0, 4.9]
    assert pick(wall, usd, [0, 1, 2, 3]) == 1  # $6 is within 1.25 x $4.9 and the fastest such
    assert pick(wall, usd, [0, 2, 3]) == 0
    assert pick(wall, usd, []) is None


def test_a_debug_recipe_picks_one_gpu() -> None:
    result = plan.run(
        load_recipe("pretrain", find_recipe("debug/clip-tiny")), ["a100-40gb", "h100-sxm"], [1, 8, 32]
    )
    assert result.pick is not None and result.rows[result.pick].count == 1
    assert len({round(row.usd, 9) for row in result.rows if row.fits}) > 1  # the curve is not flat


@pytest.mark.parametrize(
    ("step", "per_gpu_batch", "memory_limited", "expected"),
    [
        (StepTime(1.0, 0.0, 0.0), 5000, False, "data loader"),  # 5000 images/s > 3600
        (StepTime(1.0, 0.5, 0.0), 100, True, "communication"),  # 0.5 of 1.5 s > 30%
        (StepTime(1.0, 0.1, 0.0), 100, True, "memory"),
        (StepTime(0.1, 0.0, 0.2), 10, False, "overhead"),
        (StepTime(1.0, 0.1, 0.1), 100, False, "compute"),
    ],
)
def test_bottleneck_labels(step: StepTime, per_gpu_batch: float, memory_limited: bool, expected: str) -> None:
    assert bottleneck(step, per_gpu_batch, memory_limited, 3600.0) == expected


def test_loader_rate_comes_from_a_recorded_measurement_or_the_default(tmp_path: Path) -> None:
    assert loader_images_per_s_per_gpu(tmp_path / "absent.json") == (
        3600.0,
        "default (300 images/s per core)",
    )
    recorded = record_decode_rate(100.0, tmp_path / "decode_rate.json")
    assert json.loads(recorded.read_text()) == {"images_per_s": 100.0}
    rate, source = loader_images_per_s_per_gpu(recorded)
    assert rate == 1200.0 and "measured" in source


def test_bundled_names_the_calibration_set() -> None:
    assert resolve_runs_path(Path("bundled")) == BUNDLED_RUNS
    assert resolve_runs_path(Path("mine.csv")) == Path("mine.csv")


def test_checkpointed_rows_count_the_repeated_forward() -> None:
    # haotian-liu/LLaVA scripts/v1_5/finetune.sh passes --gradient_checkpointing True: the LLM's forward
    # (2 FLOPs per parameter per token) runs twice
    row = next(r.cells for r in read_runs(BUNDLED_RUNS) if r.cells["name"] == "LLaVA-1.5-7B stage 2")
    assert is_checkpointed(row)
    plain = row | {"name": "unnamed run"}
    assert not is_checkpointed(plain)
    tokens = (336 // 14) ** 2 + DEFAULT_TEXT_TOKENS["other"]
    extra = row_flops_per_sample(row) - row_flops_per_sample(plain)  # type: ignore[operator]
    assert extra == pytest.approx(2 * LLM_PARAMS["llama-7b"] * tokens)
    notes = next(r.cells for r in read_runs(BUNDLED_RUNS) if "L/14 LAION-400M (e32)" in r.cells["name"])
    assert is_checkpointed(notes)  # its notes say "Gradient checkpointing on."
