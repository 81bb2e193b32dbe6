"""Sample accounting: every sample a source holds or a loader reads is kept, or dropped with a reason.

Index-time drops (pairing, captions, a cut tar, a folder entry leading outside its folder) are known
when a source is opened; read-time drops (decode errors, truncated or too-small images) when an image
is decoded. The run stops when the drops exceed ``data.max_bad_fraction`` of the source's samples:
index-time drops plus the read-time drops of the current epoch (each sample is read once per epoch
across all ranks, so nothing is counted twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from vlmforge.errors import UserError

REASONS = (
    "decode_error",
    "truncated",
    "too_small",
    "bad_caption",
    "missing_pair",
    "missing_image",
    "empty_answer",
    "unsafe_path",
)
EXAMPLES_KEPT = 20  # dropped samples named in summaries and errors


@dataclass(frozen=True)
class Drop:
    """One dropped sample: where it is (shard or folder, key) and why."""

    shard: str
    key: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.shard}:{self.key} ({self.reason}: {self.detail})"


class BadSample(UserError):
    """An image that cannot be used. Loaders catch it and count it; direct readers see a UserError."""

    def __init__(self, drop: Drop) -> None:
        super().__init__(
            f"cannot use sample {drop.key} of {drop.shard}: {drop.reason} ({drop.detail})",
            hint="remove or replace the file; `vlmforge data check` lists every bad sample",
        )
        self.drop = drop


@dataclass
class Tally:
    """Counts of samples read, and of those dropped per reason, with the first few dropped named."""

    read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: list[Drop] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return sum(self.dropped.values())

    @property
    def kept(self) -> int:
        return self.read - self.bad

    def to_json(self) -> dict[str, object]:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": count_reasons(self.dropped.elements()),
            "examples": [d.to_json() for d in self.examples],
        }


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Non-zero counts per reason, in REASONS order."""
    counts = Counter(reasons)
    return {r: counts[r] for r in REASONS if counts[r]}


def over_budget(bad: int, total: int, max_bad_fraction: float) -> bool:
    """True when ``bad`` of ``total`` samples is more than the allowed fraction."""
    return bad > max_bad_fraction * total


class DataOverBudget(UserError):
    """More bad samples than ``data.max_bad_fraction`` allows: the run stops (before it starts, or at the
    optimizer step where the budget is crossed)."""


def budget_error(
    source: str, bad: int, total: int, max_bad_fraction: float, examples: list[Drop]
) -> DataOverBudget:
    """The error that stops a run: how many, the limit, and the first dropped samples by shard and key."""
    shown = "; ".join(str(d) for d in examples[:5]) or "see metrics.jsonl"
    return DataOverBudget(
        f"data {source!r}: {bad} of {total} samples dropped ({bad / max(total, 1):.2%}), above "
        f"data.max_bad_fraction={max_bad_fraction:g}. First: {shown}",
        hint="list every bad sample with `vlmforge data check`, fix or remove them, "
        "or raise data.max_bad_fraction",
    )
