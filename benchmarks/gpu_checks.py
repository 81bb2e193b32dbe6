"""Run the GPU-only tests (`pytest -m gpu`) and record what ran, where, and the outcome.

    python benchmarks/gpu_checks.py            # on a machine with a CUDA GPU

Appends one entry to benchmarks/results/gpu_checks.json: date, device name and count, torch/CUDA versions,
and every gpu-marked test with its outcome (passed / failed / skipped, with the message). Without a CUDA
device nothing is run and the file is left as it is (exit code 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from _common import RESULTS_DIR

REPO = Path(__file__).resolve().parents[1]
RESULT = RESULTS_DIR / "gpu_checks.json"


def outcomes(junit: Path) -> list[dict[str, str]]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "")[:500]
        rows.append(
            {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message}
        )
    return rows


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: the gpu checks need one (nothing recorded)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "gpu.xml"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={junit}", "tests"], cwd=REPO
        )
        rows = outcomes(junit) if junit.is_file() else []
    entry = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pytest_exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "tests": rows,
    }
    history = json.loads(RESULT.read_text())["runs"] if RESULT.is_file() else []
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({"benchmark": "gpu_checks", "runs": [*history, entry]}, indent=2) + "\n")
    passed = sum(r["outcome"] == "passed" for r in rows)
    print(f"{passed}/{len(rows)} gpu tests passed on {entry['device']} -> {RESULT}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
