"""The accelerator catalog: peak dense TFLOP/s, memory and price per device (bundled CSV, overridable),
and which catalog entry the CUDA device at hand is."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError

BUNDLED = Path(__file__).with_name("accelerators.csv")


@dataclass(frozen=True)
class Accelerator:
    name: str
    bf16_tflops: float
    fp16_tflops: float
    fp32_tflops: float
    memory_gb: float
    interconnect: str
    usd_per_hour: float
    price_date: str
    price_source: str

    def peak_flops(self, precision: str) -> float:
        """Peak FLOP/s for a recipe precision ('32', 'bf16-mixed', '16-mixed')."""
        tflops = {"32": self.fp32_tflops, "16-mixed": self.fp16_tflops}.get(precision, self.bf16_tflops)
        return tflops * 1e12


def _read(path: Path) -> dict[str, Accelerator]:
    if not path.is_file():
        raise UserError(f"accelerator catalog not found: {path}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    out: dict[str, Accelerator] = {}
    for row_no, row in enumerate(csv.DictReader(lines), start=2):
        try:
            out[row["name"].strip().lower()] = Accelerator(
                name=row["name"].strip().lower(),
                bf16_tflops=float(row["bf16_tflops"]),
                fp16_tflops=float(row["fp16_tflops"]),
                fp32_tflops=float(row["fp32_tflops"]),
                memory_gb=float(row["memory_gb"]),
                interconnect=row.get("interconnect", "") or "",
                usd_per_hour=float(row["usd_per_hour"]),
                price_date=row.get("price_date", "") or "",
                price_source=row.get("price_source", "") or "",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: row {row_no} is incomplete or not numeric ({exc})") from None
    return out


def load_catalog(extra: Path | None = None) -> dict[str, Accelerator]:
    """The bundled catalog, with rows from ``extra`` added or replacing same-named ones."""
    catalog = _read(BUNDLED)
    if extra is not None:
        catalog |= _read(extra)
    return catalog


def lookup(catalog: dict[str, Accelerator], name: str) -> Accelerator:
    key = name.strip().lower()
    if key not in catalog:
        import difflib

        close = difflib.get_close_matches(key, list(catalog), n=3)
        raise UserError(
            f"unknown accelerator {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
            hint=f"known: {', '.join(catalog)}; add your own with --catalog FILE.csv",
        )
    return catalog[key]


# CUDA device-name fragments -> catalog names; first match wins (so "l40s" before "l4").
DEVICE_NAMES = (
    ("h200", "h200"),
    ("h100 pcie", "h100-pcie"),
    ("h100", "h100-sxm"),
    ("a100", "a100"),
    ("l40s", "l40s"),
    ("a10g", "a10g"),
    ("l4", "l4"),
    ("v100", "v100"),
    ("4090", "rtx-4090"),
)


def catalog_name_for(device_name: str, memory_gb: float) -> str | None:
    """The catalog entry of a CUDA device, e.g. 'NVIDIA A100-SXM4-80GB' -> 'a100-80gb'."""
    lowered = device_name.lower()
    for fragment, name in DEVICE_NAMES:
        if fragment in lowered:
            if name == "a100":
                return "a100-80gb" if memory_gb > 50 else "a100-40gb"
            return name
    return None


def present_accelerator(recipe: TrainingRecipe) -> tuple[str, str | None]:
    """(device description, catalog name or None) for the devices this recipe will train on."""
    import torch

    if recipe.train.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu", None
    props = torch.cuda.get_device_properties(0)
    name = recipe.plan.accelerator or catalog_name_for(props.name, props.total_memory / 1024**3)
    return props.name, name
