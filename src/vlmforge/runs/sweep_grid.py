"""A sweep's children: ``--grid key=[a,b]`` axes expanded into override lists (the cartesian product, or
a seeded sample of it), and the record ``sweep.json`` that lets the same command resume a sweep.

Pure functions over plain data: the sweep verb loads, validates, plans and runs the children.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.config.load import parse_override
from vlmforge.errors import UserError, raise_all
from vlmforge.storage import is_completed, read_json

RECORD = "sweep.json"
FINISHED = ("completed", "diverged")  # outcomes a rerun would only repeat: such a child is not run again


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` flag: a dotted recipe key and the values it takes."""

    key: str
    values: tuple[str, ...]  # each as an override's right-hand side, so a child reads as key=value


@dataclass
class Child:
    """One recipe of the sweep: the base recipe with ``overrides`` applied, trained as ``name``."""

    index: int
    name: str
    overrides: list[str]
    status: str = "pending"  # pending | running | completed | preempted | interrupted | diverged | failed
    run_dir: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # how the last attempt started: fresh, resumed from a checkpoint, or restarted

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "overrides": self.overrides,
            "status": self.status,
            "run_dir": self.run_dir,
            "plan": self.plan,
            "metrics": self.metrics,
            "note": self.note,
        }


def parse_axis(text: str) -> Axis:
    """``train.max_steps=[10,20]`` -> Axis("train.max_steps", ("10", "20")); a single value is an axis
    of one. Values are written back as YAML flow text so that each child's override reads as typed."""
    import yaml

    path, value = parse_override(text)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError(
            f"--grid {text!r}: the list of values is empty", hint="e.g. --grid 'optim.lr=[1e-3,3e-3]'"
        )
    shown = tuple(
        yaml.safe_dump(v, default_flow_style=True, width=1_000_000).strip().removesuffix("\n...").strip()
        for v in values
    )
    if len(set(shown)) != len(shown):
        raise UserError(f"--grid {text!r}: a value is listed twice", hint="list each value once")
    return Axis(".".join(path), shown)


def parse_axes(texts: list[str]) -> list[Axis]:
    """Every ``--grid`` flag; a key given twice is refused (its values would multiply, not combine)."""
    if not texts:
        raise UserError("a sweep needs at least one --grid", hint="e.g. --grid 'optim.lr=[1e-3,3e-3]'")
    axes = [parse_axis(text) for text in texts]
    keys = [axis.key for axis in axes]
    raise_all(
        [
            UserError(f"--grid {key}: given more than once", hint="put all its values in one list")
            for key in sorted({k for k in keys if keys.count(k) > 1})
        ]
    )
    return axes


def expand(axes: list[Axis], sample: int | None = None, seed: int = 0) -> list[list[str]]:
    """Each child's overrides: the cartesian product of the axes in order, or ``sample`` of its points
    drawn without replacement by a ``random.Random(seed)`` (kept in product order)."""
    points = [
        [f"{axis.key}={value}" for axis, value in zip(axes, combo, strict=True)]
        for combo in itertools.product(*(axis.values for axis in axes))
    ]
    if sample is None:
        return points
    if not 1 <= sample <= len(points):
        raise UserError(
            f"--random {sample}: the grid has {len(points)} points",
            hint=f"choose 1 to {len(points)}, or leave --random out to run every point",
        )
    chosen = sorted(random.Random(seed).sample(range(len(points)), sample))
    return [points[i] for i in chosen]


def child_name(base: str, index: int) -> str:
    return f"{base}-{index:03d}"


def identity(config: str, base_overrides: list[str], children: list[list[str]]) -> dict[str, Any]:
    """What makes two invocations the same sweep: the recipe, the shared overrides and every child."""
    return {"recipe": config, "overrides": base_overrides, "children": children}


def check_same_sweep(sweep_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded sweep in ``sweep_dir`` (None when there is none); refused when it differs."""
    path = sweep_dir / RECORD
    if not path.is_file():
        return None
    try:
        recorded = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})", hint="choose another --out") from None
    found = identity(
        recorded.get("recipe"),
        recorded.get("overrides"),
        [child.get("overrides") for child in recorded.get("children", [])],
    )
    if found != expected:
        changed = [key for key in ("recipe", "overrides", "children") if found[key] != expected[key]]
        raise UserError(
            f"{path} records a different sweep (its {', '.join(changed)} differ from this command's); "
            "resuming it with another grid would mix two sweeps",
            hint="rerun the recorded command to resume it, or give a new --out for the new grid",
        )
    return recorded


def newest_run(sweep_dir: Path, name: str) -> Path | None:
    """The newest run directory of a child (runs are named by start time)."""
    runs = sorted((p for p in (sweep_dir / name).glob("*") if p.is_dir()), key=lambda p: p.name)
    return runs[-1] if runs else None


def recorded_outcome(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(status, metrics) of a child's run directory from its result.json; ``pending`` without one."""
    result = run_dir / "result.json"
    if is_completed(run_dir):
        return "completed", read_json(result).get("metrics", {})
    try:
        data = read_json(result) if result.is_file() else {}
    except (OSError, ValueError):
        data = {}
    return str(data.get("status", "pending")), data.get("metrics", {})


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested result metrics flattened to dotted keys, numbers only (``eval.zeroshot.top1``)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= numeric_metrics(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
