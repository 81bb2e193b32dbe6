"""The accelerator catalog: peak dense TFLOP/s, memory and price per device (bundled CSV, overridable),
and which catalog entry the CUDA device at hand is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmforge.config.schema import TrainingRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.planning.csvfile import CsvRow, number_problem, read_csv

BUNDLED = Path(__file__).with_name("accelerators.csv")
# A user catalog without bandwidth columns: PCIe Gen4 x16 inside a node, 100 Gb/s per 8-GPU node across.
DEFAULT_INTRA_NODE_GB_S = 32.0
DEFAULT_INTER_NODE_GB_S = 1.5625


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
    intra_node_gb_s: float = DEFAULT_INTRA_NODE_GB_S
    inter_node_gb_s: float = DEFAULT_INTER_NODE_GB_S
    devices_per_node: int = 8

    def bandwidth_gb_s(self, devices: int) -> float:
        """Per-device bandwidth of the slowest link a collective over ``devices`` crosses."""
        return self.intra_node_gb_s if devices <= self.devices_per_node else self.inter_node_gb_s

    def peak_flops(self, precision: str) -> float:
        """Peak FLOP/s for a recipe precision ('32', 'bf16-mixed', '16-mixed')."""
        tflops = {"32": self.fp32_tflops, "16-mixed": self.fp16_tflops}.get(precision, self.bf16_tflops)
        return tflops * 1e12


CATALOG_COLUMNS = ("name", "bf16_tflops", "fp16_tflops", "fp32_tflops", "memory_gb", "usd_per_hour")
# numeric column -> (must it be above 0, what it is); a price may be 0: hardware you own
NUMERIC_COLUMNS = {
    "bf16_tflops": (True, "the device's peak dense bf16 TFLOP/s, above 0"),
    "fp16_tflops": (True, "the device's peak dense fp16 TFLOP/s, above 0"),
    "fp32_tflops": (True, "the device's peak fp32 (TF32) TFLOP/s, above 0"),
    "memory_gb": (True, "the device's memory in GB, above 0"),
    "usd_per_hour": (False, "the price of one device for one hour, 0 or more (0: hardware you own)"),
}
# optional columns: checked (above 0) when a row gives them
BANDWIDTH_COLUMNS = {
    "intra_node_gb_s": "one-direction GB/s per device inside a node, above 0",
    "inter_node_gb_s": "one-direction GB/s per device across nodes, above 0",
    "devices_per_node": "devices sharing the fast intra-node links, above 0",
}
CATALOG_HINT = "use the columns of the bundled catalog (vlmforge/planning/accelerators.csv)"


def row_problems(path: Path, row: CsvRow) -> list[UserError]:
    """Every unusable cell of a catalog row, each naming the file, line and column."""
    where = f"{path}: line {row.line}"
    problems = [] if row.cells["name"] else [UserError(f"{where}, column name: is empty", CATALOG_HINT)]
    for column, (positive, meaning) in NUMERIC_COLUMNS.items():
        problem = number_problem(row.cells[column], positive)
        if problem is not None:
            problems.append(UserError(f"{where}, column {column}: {problem}", hint=f"{column}: {meaning}"))
    for column, meaning in BANDWIDTH_COLUMNS.items():
        problem = number_problem(row.cells[column], True) if row.cells.get(column) else None
        if problem is not None:
            problems.append(UserError(f"{where}, column {column}: {problem}", hint=f"{column}: {meaning}"))
    return problems


def accelerator(row: CsvRow) -> Accelerator:
    """A checked catalog row (``row_problems`` found nothing) as an ``Accelerator``."""
    cells = row.cells
    return Accelerator(
        name=cells["name"].lower(),
        bf16_tflops=float(cells["bf16_tflops"]),
        fp16_tflops=float(cells["fp16_tflops"]),
        fp32_tflops=float(cells["fp32_tflops"]),
        memory_gb=float(cells["memory_gb"]),
        interconnect=cells.get("interconnect", ""),
        usd_per_hour=float(cells["usd_per_hour"]),
        price_date=cells.get("price_date", ""),
        price_source=cells.get("price_source", ""),
        intra_node_gb_s=float(cells.get("intra_node_gb_s") or DEFAULT_INTRA_NODE_GB_S),
        inter_node_gb_s=float(cells.get("inter_node_gb_s") or DEFAULT_INTER_NODE_GB_S),
        devices_per_node=int(float(cells.get("devices_per_node") or 8)),
    )


def _read(path: Path) -> dict[str, Accelerator]:
    """A catalog file; every bad cell of every row is reported at once, and no row of a bad file is used."""
    rows = read_csv(path, "accelerator catalog", CATALOG_COLUMNS, CATALOG_HINT, comments=True)
    raise_all([problem for row in rows for problem in row_problems(path, row)])
    return {acc.name: acc for acc in map(accelerator, rows)}


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
