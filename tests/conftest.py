"""Shared helpers: run the real CLI in a subprocess, build small real datasets on disk; every test is marked
with its lane (``unit``, ``integration``, ``distributed``) from the folder it lives in."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["VLMFORGE_CACHE"] = tempfile.mkdtemp(prefix="vlmforge-test-cache-")  # calibrations stay out of ~
REPO = Path(__file__).resolve().parents[1]
DEBUG_RECIPE = REPO / "recipes" / "debug" / "clip-tiny.yaml"
LLAVA_RECIPE = REPO / "recipes" / "debug" / "llava-tiny.yaml"
LANES = ("unit", "integration", "distributed")
# tests/hostile: bad input and faults through the real CLI, in the integration lane
LANE_OF_FOLDER = {"hostile": "integration"}
needs_ffcv = pytest.mark.skipif(
    importlib.util.find_spec("ffcv") is None,
    reason="the ffcv extra is not installed (it needs libturbojpeg and OpenCV development files)",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        lane = LANE_OF_FOLDER.get(folder, folder)
        if lane in LANES:
            item.add_marker(getattr(pytest.mark, lane))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env | (extra or {})


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 600,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``vlmforge ARGS`` as a user would run it (``env``: variables set on top of this process's); returns
    the finished process (stdout/stderr as text)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vlmforge_cli", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"vlmforge {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vlmforge_cli", *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_json(stdout: str) -> dict[str, Any]:
    """The final JSON object a verb prints with --format json."""
    return json.loads(stdout.strip().splitlines()[-1])


def pretrain_json(cwd: Path, recipe: str | Path, *args: str) -> dict[str, Any]:
    """``vlmforge pretrain -c RECIPE ARGS --format json`` that must succeed; its final JSON object."""
    return last_json(
        run_cli("pretrain", "-c", str(recipe), *args, "--format", "json", cwd=cwd, check=True).stdout
    )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def step_losses(run_dir: Path) -> dict[int, float]:
    """{step: loss}; a resumed run appends its steps, the latest record of a step wins (evaluation lines,
    which have no loss, are skipped)."""
    return {record["step"]: record["loss"] for record in read_metrics(run_dir) if "loss" in record}


# The debug recipe as the strategy tests train it: 20 steps, a loss every step, a checkpoint at step 10.
SHORT_RUN = [
    "data.batch_size=32",
    "train.max_steps=20",
    "train.log_every_steps=1",
    "train.checkpoint.every_steps=10",
    "eval=[]",
]
FSDP = ["train.devices=2", "train.strategy.kind=fsdp", "train.accelerator=cpu"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One debug pretraining run through the CLI, shared by the tests that only read its outputs."""
    cwd = tmp_path_factory.mktemp("tiny-run")
    proc = run_cli("pretrain", "-c", str(DEBUG_RECIPE), "--format", "json", cwd=cwd, check=True)
    result = last_json(proc.stdout)
    result["cwd"] = cwd
    result["stderr"] = proc.stderr
    result["run_dir"] = cwd / result["run_dir"]
    return result


@pytest.fixture(scope="session")
def llava_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short debug LLaVA finetune (10 + 60 steps, VQA evaluation; seconds on CPU) in a folder of runs,
    shared by the tests that only read it: it answers about a third of the held-out digit questions
    (chance: a tenth), enough for answers and accuracies to be compared."""
    cwd = tmp_path_factory.mktemp("llava-run")
    short = ("stages.0.max_steps=10", "stages.1.max_steps=60")
    proc = run_cli("finetune", "-c", str(LLAVA_RECIPE), *short, "--format", "json", cwd=cwd, check=True)
    return cwd / last_json(proc.stdout)["run_dir"]


@pytest.fixture(scope="session")
def coca_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short debug CoCa run (30 steps, no eval): a captioner and scorer for the tests that read it."""
    cwd = tmp_path_factory.mktemp("coca-run")
    result = pretrain_json(cwd, "debug/coca-tiny", "train.max_steps=30", "eval=[]")
    return cwd / result["run_dir"]


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real digit images written as PNG files + captions.jsonl with labels: a user's folder dataset."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits-folder")
    raw = load_digits()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    lines = []
    for i in range(120):
        pixels = (raw.images[i] / 16.0 * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((32, 32)).save(root / f"img{i:03d}.png")
        label = names[raw.target[i]]
        lines.append(
            json.dumps({"image": f"img{i:03d}.png", "caption": f"a handwritten {label}.", "label": label})
        )
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The curation test pool (``tests/curate_pool.py``), built once; tests only read it."""
    from tests.curate_pool import build_pool

    return build_pool(tmp_path_factory.mktemp("curate-pool"))


@pytest.fixture(scope="session")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised tiny open_clip model saved as a local checkpoint + its config JSON."""
    from tests.curate_pool import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-open-clip"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """WebDataset shards with planted problems (``tests/webdataset_shards.py``) and what was written."""
    from tests.webdataset_shards import write_shards

    root = tmp_path_factory.mktemp("shards")
    return root, write_shards(root)


@pytest.fixture(scope="session")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, plain strategy, ``SHORT_RUN``: what the compiled and sharded runs are compared with."""
    cwd = tmp_path_factory.mktemp("single")
    return cwd / pretrain_json(cwd, DEBUG_RECIPE, *SHORT_RUN, "name=single")["run_dir"]


@pytest.fixture(scope="module")
def digits_beton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits written as an FFCV .beton (the ffcv extra)."""
    from vlmforge.config.schema import DigitsData
    from vlmforge.data.ffcv import write_beton
    from vlmforge.data.sources import open_source

    path = tmp_path_factory.mktemp("ffcv") / "digits.beton"
    cfg = DigitsData()
    write_beton(open_source(cfg), path, cfg.mean, cfg.std)
    return path
