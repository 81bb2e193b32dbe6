"""Achievable utilisation (MFU) fitted on published training runs, and predictions for any such run.

MFU = training FLOPs / (accelerator-hours x 3600 x peak FLOP/s). Training FLOPs = FLOPs per sample
(counted on the real open_clip architecture at the run's resolution, text length and masking; LLMs by
6·N·D) x samples seen. The prior is the median MFU of the runs of the same family (all runs if the
family has none); leave-one-out error says how well it predicts a run it was not fitted on.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import UserError
from vlmforge.planning.accelerators import Accelerator, load_catalog
from vlmforge.planning.csvfile import CsvRow, read_csv
from vlmforge.planning.flops import count_on_meta

BUNDLED_RUNS = Path(__file__).with_name("published_runs.csv")
PRIOR_FILE = Path(__file__).with_name("prior.json")  # the fitted prior vlmforge plans with
REQUIRED_COLUMNS = ("name", "family", "vision_arch", "samples_seen", "accel", "accel_count")
EXCLUDED_BOUNDS = {"unreliable", "claim"}
# Parameters of the LLMs that appear in LLaVA-style runs (model cards / papers).
LLM_PARAMS = {
    "llama-7b": 6.74e9,
    "llama-13b": 13.0e9,
    "vicuna-7b": 6.74e9,
    "vicuna-13b": 13.0e9,
    "llama-2-7b": 6.74e9,
    "llama-2-13b": 13.0e9,
    "mistral-7b": 7.24e9,
    "yi-34b": 34.4e9,
    "flan-t5-xl": 2.85e9,
    "flan-t5-xxl": 11.1e9,
    "mobilellama-1.4b": 1.36e9,
    "mobilellama-2.7b": 2.7e9,
    "qwen-7b": 7.7e9,
    "phi-2": 2.7e9,
}
# Text tokens per sample when a run does not state them: LLaVA stage-1 caption pairs are short, stage-2
# conversations long (LLaVA-1.5 data: ~60 and ~500 tokens on average).
DEFAULT_TEXT_TOKENS = {"projector": 64, "other": 512}


@dataclass
class PublishedRun:
    row: dict[str, str]
    flops_per_sample: float | None
    total_flops: float | None
    accelerator: Accelerator | None
    mfu: float | None


RUNS_HINT = "use the columns of the bundled published_runs.csv (in vlmforge/planning/)"


def read_runs(path: Path) -> list[CsvRow]:
    """The rows of a published-runs CSV, each with its line in the file."""
    return read_csv(path, "published runs file", REQUIRED_COLUMNS, RUNS_HINT)


def number(value: str | None) -> float | None:
    """A CSV cell as a float; blank, unparseable, NaN or infinite -> None."""
    try:
        parsed = float(value) if value else None
    except ValueError:
        return None
    return parsed if parsed is not None and math.isfinite(parsed) else None


@functools.lru_cache(maxsize=256)
def open_clip_flops(
    arch: str, image_size: int | None, text_len: int | None, kept: float, trained: str
) -> float:
    """Training FLOPs for one image-text sample through an open_clip model (meta device)."""
    import open_clip

    kwargs: dict[str, Any] = {"device": "meta"}
    if image_size:
        kwargs["force_image_size"] = image_size
    if text_len:
        kwargs["force_context_length"] = text_len
    if kept < 1:
        kwargs["force_patch_dropout"] = 1 - kept

    def build() -> torch.nn.Module:
        from vlmforge.models.contrastive import quiet_random_init

        with quiet_random_init():
            model = open_clip.create_model(arch, pretrained=None, **kwargs)
        if trained == "text":  # locked-image tuning: the image tower is frozen
            for param in model.visual.parameters():
                param.requires_grad_(False)
        return model

    def step(model: torch.nn.Module) -> torch.Tensor:
        size = model.visual.image_size
        side = size[0] if isinstance(size, tuple | list) else size
        image = torch.empty(1, 3, side, side, device="meta")
        text = torch.zeros(1, text_len or model.context_length, dtype=torch.long, device="meta")
        out = model(image, text)
        tensors = out.values() if isinstance(out, dict) else out
        return sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())

    return float(count_on_meta(build, step).train)


@functools.lru_cache(maxsize=64)
def open_clip_image_forward_flops(arch: str, image_size: int | None) -> float:
    import open_clip

    kwargs: dict[str, Any] = {"device": "meta"}
    if image_size:
        kwargs["force_image_size"] = image_size

    def build() -> torch.nn.Module:
        from vlmforge.models.contrastive import quiet_random_init

        with quiet_random_init():
            return open_clip.create_model(arch, pretrained=None, **kwargs).visual

    def step(visual: torch.nn.Module) -> torch.Tensor:
        size = visual.image_size
        side = size[0] if isinstance(size, tuple | list) else size
        with torch.no_grad():
            return visual(torch.empty(1, 3, side, side, device="meta")).sum()

    return float(count_on_meta(build, step).forward)


def _arch(name: str) -> str:
    return name.replace("(frozen)", "").split("+")[0].strip().split(" ")[0]


def _image_tokens(description: str, arch: str, image_size: int | None) -> int:
    """Visual tokens fed to the LLM: one per patch, 32 learned queries behind a Q-Former (BLIP-2), a
    quarter of the patches behind MobileVLM's LDP projector (2x2 pooling)."""
    if "q-former" in description.lower():
        return 32
    parts = arch.split("-")
    patch = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 14
    tokens = ((image_size or 224) // patch) ** 2
    return tokens // 4 if "ldp" in description.lower() else tokens


def row_flops_per_sample(row: dict[str, str]) -> float | None:
    """FLOPs per training sample for a published-run row, or None when its model cannot be counted."""
    from vlmforge.config.schema import open_clip_architectures

    known = open_clip_architectures()
    arch = _arch(row.get("vision_arch", ""))
    image_size = int(number(row.get("image_res", "")) or 0) or None
    trained = row.get("trained", "") or "all"
    llm = _arch(row.get("llm_arch", "")).lower()
    if llm:
        if llm not in LLM_PARAMS or arch not in known:
            return None
        tokens = _image_tokens(row.get("vision_arch", ""), arch, image_size) + (
            number(row.get("text_len", ""))
            or DEFAULT_TEXT_TOKENS["projector" if trained == "projector" else "other"]
        )
        llm_trained = "llm" in trained
        # forward 2·N·T; backward 4·N·T when the LLM trains, 2·N·T (activation grads only) when frozen
        llm_flops = (6 if llm_trained else 4) * LLM_PARAMS[llm] * tokens
        return open_clip_image_forward_flops(arch, image_size) + llm_flops
    if arch not in known or trained not in ("all", "text"):
        return None
    text_len = int(number(row.get("text_len", "")) or 0) or None
    kept = number(row.get("kept_patch_fraction", "")) or 1.0
    return open_clip_flops(arch, image_size, text_len, kept, trained)


def evaluate_row(row: dict[str, str], catalog: dict[str, Accelerator]) -> PublishedRun:
    """A published run's FLOPs, accelerator and measured MFU (None where the row does not say)."""
    flops = row_flops_per_sample(row)
    samples = number(row.get("samples_seen", ""))
    accel = catalog.get(row.get("accel", "").lower())
    total = flops * samples if flops and samples else None
    hours = number(row.get("accel_hours", ""))
    wall, count = number(row.get("wall_hours", "")), number(row.get("accel_count", ""))
    if hours is None and wall and count:
        hours = wall * count
    mfu = total / (hours * 3600 * accel.peak_flops("bf16-mixed")) if total and hours and accel else None
    return PublishedRun(row, flops, total, accel, mfu)


def evaluate_rows(
    rows: list[dict[str, str]], catalog: dict[str, Accelerator] | None = None
) -> list[PublishedRun]:
    catalog = catalog or load_catalog()
    return [evaluate_row(row, catalog) for row in rows]


def usable_for_fit(run: PublishedRun) -> bool:
    """Runs with a measured MFU that is physically possible (0 < MFU <= 1) and a trustworthy bound."""
    return run.mfu is not None and 0 < run.mfu <= 1 and run.row.get("bound", "") not in EXCLUDED_BOUNDS


def fit_prior(runs: list[PublishedRun]) -> dict[str, float]:
    """Median MFU per family, plus '*' for all families together."""
    usable = [r for r in runs if usable_for_fit(r)]
    if not usable:
        raise UserError("no usable published runs to fit the utilisation prior on")
    prior = {"*": statistics.median(r.mfu for r in usable)}  # type: ignore[misc]
    for family in {r.row["family"] for r in usable}:
        prior[family] = statistics.median(r.mfu for r in usable if r.row["family"] == family)  # type: ignore[misc]
    return prior


def predict_hours(run: PublishedRun, prior: dict[str, float]) -> tuple[float, float | None] | None:
    """(accelerator-hours, wall-clock hours) predicted for a run from its FLOPs and the prior; wall-clock
    hours are None when the run does not give its accelerator count."""
    if run.total_flops is None or run.accelerator is None:
        return None
    mfu = prior.get(run.row.get("family", ""), prior["*"])
    accel_hours = run.total_flops / (mfu * run.accelerator.peak_flops("bf16-mixed") * 3600)
    count = number(run.row.get("accel_count", ""))
    return accel_hours, (accel_hours / count if count and count > 0 else None)


def leave_one_out(runs: list[PublishedRun]) -> list[float]:
    """Absolute % error of accelerator-hours for each usable run, predicted by a prior fitted without it."""
    errors = []
    for i, run in enumerate(runs):
        if not usable_for_fit(run):
            continue
        others = [r for j, r in enumerate(runs) if j != i]
        predicted = predict_hours(run, fit_prior(others))
        actual = run.total_flops / (run.mfu * run.accelerator.peak_flops("bf16-mixed") * 3600)  # type: ignore[operator,union-attr]
        if predicted is not None:
            errors.append(abs(predicted[0] - actual) / actual * 100)
    return errors


def fit_bundled() -> dict[str, Any]:
    """The prior fitted on the bundled published runs, with its leave-one-out error."""
    runs = evaluate_rows([row.cells for row in read_runs(BUNDLED_RUNS)])
    errors = leave_one_out(runs)
    return {
        "source": "published_runs.csv (see published_runs_README.md): median MFU per family",
        "mfu": {k: round(v, 6) for k, v in sorted(fit_prior(runs).items())},
        "runs_used": sum(usable_for_fit(r) for r in runs),
        "leave_one_out_median_abs_pct_error": round(statistics.median(errors), 2),
        "leave_one_out_max_abs_pct_error": round(max(errors), 2),
    }


if __name__ == "__main__":  # regenerate planning/prior.json after editing published_runs.csv
    import json

    Path(__file__).with_name("prior.json").write_text(json.dumps(fit_bundled(), indent=2) + "\n")


def load_prior() -> dict[str, Any]:
    """The fitted prior (``prior.json``): MFU per published-runs family, ``*`` for any other."""
    return json.loads(PRIOR_FILE.read_text(encoding="utf-8"))
