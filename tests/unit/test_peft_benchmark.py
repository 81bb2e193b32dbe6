"""benchmarks/peft.py: the pre-registered claim's verdict, and WiSE-FT at a validation-chosen alpha."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    # loaded under another name: "peft" is the adapter package's, and _common sits beside the file
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("peft_benchmark", BENCHMARKS / "peft.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        if str(BENCHMARKS) in sys.path:
            sys.path.remove(str(BENCHMARKS))


def _run(zero_shot: float, **tuned: float) -> dict[str, Any]:
    methods = [{"method": name, "tuned": {"top1": top1}} for name, top1 in tuned.items()]
    return {"zero_shot": {"top1": zero_shot}, "methods": methods}


def test_claim_holds_only_when_every_method_beats_zero_shot_in_every_run(bench: ModuleType) -> None:
    runs = [_run(0.5, coop=0.6, lora=0.9), _run(0.5, coop=0.7, lora=0.8)]
    assert bench.claim_verdict(runs, ["coop", "lora"]) == {
        "per_method": {"coop": True, "lora": True},
        "holds": True,
    }
    # a tie is not a win, and one run against is enough
    runs.append(_run(0.5, coop=0.5, lora=0.8))
    assert bench.claim_verdict(runs, ["coop", "lora"]) == {
        "per_method": {"coop": False, "lora": True},
        "holds": False,
    }


def test_wise_ft_headline_is_the_test_score_at_the_chosen_alpha(bench: ModuleType) -> None:
    curve = [{"alpha": 0.0, "top1": 0.5}, {"alpha": 0.5, "top1": 0.9}, {"alpha": 1.0, "top1": 0.8}]
    record = bench.wise_ft_record(curve, 1.0)
    assert (record["alpha"], record["top1"]) == (1.0, 0.8)
    assert record["test_curve_best"] == {"alpha": 0.5, "top1": 0.9}
    assert record["test_curve"] == curve
