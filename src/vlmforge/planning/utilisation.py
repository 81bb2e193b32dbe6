"""Training time of a run: compute at a fitted utilisation + exposed communication + fixed overheads.

Per optimizer step, on each of N devices::

    step_s = batch x FLOPs per sample / (N x peak x MFU) + exposed x comm_s + per_step_s
    wall_h = steps x step_s / 3600 + per_run_h;   accelerator-hours = N x wall_h

MFU grows with the parameters one sample passes through, trained or frozen (wider layers are larger
matrices, which keep the tensor cores busier; a sample's FLOPs also grow with its token count, which
does not widen a matrix): ``MFU = min(MFU_CAP, mfu_at_1b_params x (parameters / 1e9) ** mfu_exponent)``.
The communication is the data-parallel gradient all-reduce (ring: 2(N-1)/N x bytes / bandwidth,
Patarasuk & Yuan 2009) or, for fully sharded training, parameter all-gathers in forward and backward
plus the gradient reduce-scatter (3(N-1)/N x bytes / bandwidth, ZeRO-3, Rajbhandari et al. 2020, §7.2);
``exposed`` is the fraction of it not hidden behind the backward pass. The three parameters of
utilisation and communication are fitted on published runs (``planning/prior.py``) by a robust least
squares on log accelerator-hours; the two fixed overheads are not fitted (published totals cannot tell
them from utilisation, and fitting them made leave-one-out worse) and stay 0 in the prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MFU_CAP = 0.75  # no published dense training run sustains more; keeps extrapolation to huge models sane
GRADIENT_BYTES = 4  # mixed precision (autocast) keeps fp32 gradients: the all-reduce moves 4 B/parameter
SHARDED_BYTES = 2  # FSDP/ZeRO-3 gather 16-bit parameters and reduce-scatter 16-bit gradients
PARAMETER_NAMES = ("log_mfu_at_1b_params", "mfu_exponent", "exposed_comm", "per_step_s", "per_run_h")
FITTED = 3  # the first three names are fitted; the overheads stay at their START value, 0


@dataclass(frozen=True)
class RunShape:
    """What the time model needs to know about a training run (or one phase of a plan)."""

    flops_per_sample: float
    samples: float
    global_batch: float
    devices: int
    peak_flops: float  # per device, at the run's precision
    trainable_params: float
    sharded: bool  # FSDP FULL_SHARD / ZeRO-3 (parameters gathered every step) rather than DDP
    bandwidth_gb_s: float  # per device, on the slowest link the collective crosses
    model_params: float  # parameters one sample passes through, trained and frozen (sets the MFU)
    accumulate: int = 1  # micro-batches per step: sharded training gathers parameters for each

    @property
    def steps(self) -> float:
        return self.samples / self.global_batch


@dataclass(frozen=True)
class TimeModel:
    log_mfu_at_1b_params: float
    mfu_exponent: float
    exposed_comm: float
    per_step_s: float
    per_run_h: float

    @classmethod
    def from_vector(cls, values: Sequence[float]) -> TimeModel:
        return cls(*(float(v) for v in values))

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in PARAMETER_NAMES]


@dataclass(frozen=True)
class StepTime:
    compute_s: float
    comm_s: float  # exposed communication only
    overhead_s: float

    @property
    def total_s(self) -> float:
        return self.compute_s + self.comm_s + self.overhead_s


def allreduce_seconds(payload_bytes: float, devices: int, bandwidth_gb_s: float) -> float:
    """Ring all-reduce of ``payload_bytes`` over ``devices``: each sends and receives 2(N-1)/N of it
    (Patarasuk & Yuan 2009, 'Bandwidth optimal all-reduce algorithms')."""
    if devices <= 1:
        return 0.0
    return 2 * (devices - 1) / devices * payload_bytes / (bandwidth_gb_s * 1e9)


def sharded_seconds(param_count: float, devices: int, bandwidth_gb_s: float) -> float:
    """FSDP / ZeRO-3 per step: all-gather parameters in forward and in backward, reduce-scatter gradients,
    each moving (N-1)/N of the 16-bit model (ZeRO, Rajbhandari et al. 2020, §7.2: 1.5x DDP's volume)."""
    if devices <= 1:
        return 0.0
    return 3 * (devices - 1) / devices * param_count * SHARDED_BYTES / (bandwidth_gb_s * 1e9)


def communication_seconds(shape: RunShape) -> float:
    """Gradient (and, sharded, parameter) traffic of one optimizer step, before any overlap."""
    if shape.sharded:
        gathers = sharded_seconds(shape.trainable_params, shape.devices, shape.bandwidth_gb_s)
        return gathers * shape.accumulate
    return allreduce_seconds(shape.trainable_params * GRADIENT_BYTES, shape.devices, shape.bandwidth_gb_s)


def utilisation(model: TimeModel, model_params: float) -> float:
    """Achievable MFU for a model of this size: a power law in its parameters, capped at MFU_CAP."""
    scale = max(model_params, 1.0) / 1e9
    return min(MFU_CAP, math.exp(model.log_mfu_at_1b_params) * scale**model.mfu_exponent)


def step_time(model: TimeModel, shape: RunShape, mfu: float | None = None) -> StepTime:
    """One optimizer step on each device; ``mfu`` (a measured calibration) replaces the fitted one."""
    used = mfu if mfu is not None else utilisation(model, shape.model_params)
    compute = shape.global_batch * shape.flops_per_sample / (shape.devices * shape.peak_flops * used)
    return StepTime(compute, model.exposed_comm * communication_seconds(shape), model.per_step_s)


def wall_hours(model: TimeModel, shape: RunShape, mfu: float | None = None) -> float:
    return shape.steps * step_time(model, shape, mfu).total_s / 3600 + model.per_run_h


def accelerator_hours(model: TimeModel, shape: RunShape, mfu: float | None = None) -> float:
    return shape.devices * wall_hours(model, shape, mfu)


def staged_accelerator_hours(model: TimeModel, stages: Sequence[RunShape]) -> float:
    """A run trained in stages one after another (each its own launch): the sum of its stages."""
    return sum(accelerator_hours(model, stage) for stage in stages)


# ------------------------------------------------------------------------------------------- fitting
START = TimeModel(math.log(0.25), 0.1, 0.5, 0.0, 0.0)
LOWER = (math.log(0.01), -0.5, 0.0)
UPPER = (math.log(MFU_CAP), 0.5, 1.0)


def log_residuals(model: TimeModel, runs: Sequence[Sequence[RunShape]], hours: Sequence[float]) -> np.ndarray:
    predicted = np.array([staged_accelerator_hours(model, stages) for stages in runs])
    return np.log(predicted) - np.log(np.asarray(hours, dtype=float))


def fit(runs: Sequence[Sequence[RunShape]], hours: Sequence[float]) -> TimeModel:
    """Least squares on log accelerator-hours (every run weighs the same whatever its size), with a
    soft-L1 loss so one misreported run cannot drag the others (scipy.optimize.least_squares), of the
    FITTED parameters (the overheads keep START's 0). Each run is the stages it trained, in order."""
    from scipy.optimize import least_squares

    fixed = START.vector()[FITTED:]
    solution = least_squares(
        lambda x: log_residuals(TimeModel.from_vector([*x, *fixed]), runs, hours),
        START.vector()[:FITTED],
        bounds=(LOWER, UPPER),
        loss="soft_l1",
        f_scale=0.2,
    )
    return TimeModel.from_vector([*solution.x, *fixed])


def abs_pct_error(predicted: float, actual: float) -> float:
    return abs(predicted - actual) / actual * 100


def leave_one_out(runs: Sequence[Sequence[RunShape]], hours: Sequence[float]) -> list[float]:
    """Absolute % error of each run's accelerator-hours predicted by a model fitted without it."""
    errors = []
    for i, stages in enumerate(runs):
        others = [j for j in range(len(runs)) if j != i]
        model = fit([runs[j] for j in others], [hours[j] for j in others])
        errors.append(abs_pct_error(staged_accelerator_hours(model, stages), hours[i]))
    return errors
