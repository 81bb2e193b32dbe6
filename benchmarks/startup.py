"""Start-up: each verb's time to first output and to exit, next to `python -c "import torch"`.

Verbs that do not train (plan, eval, data check, validate, recipes) should not pay for what only
training needs: Lightning (with torchmetrics) is never imported by them. What each command imported of
the heavy libraries is recorded from `python -X importtime` (a separate, untimed run).

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--reps 5]

Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import write_result

HEAVY = ("lightning", "torchmetrics", "open_clip", "torchvision", "transformers", "torch._dynamo")
GOAL = 1.5  # times bare `import torch`, for the verbs that do not train


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds to the first byte on stdout or stderr, seconds to exit, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_at = time.perf_counter() - start
    proc.stdout.read()
    code = proc.wait()
    return (first_at if first else float("nan")), time.perf_counter() - start, code


def imported(command: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """The heavy top-level libraries the command imported (python -X importtime)."""
    out = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], cwd=cwd, env=env, capture_output=True, text=True
    )
    names = {
        line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    return [h for h in HEAVY if h in names]


def write_shard(path: Path, samples: int = 64) -> None:
    """A WebDataset shard of real digits (PNG + caption)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    with tarfile.open(path, "w") as tar:
        for i in range(samples):
            image = Image.fromarray((digits.images[i] * 16).astype("uint8")).resize((32, 32))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            for name, data in (
                (f"{i:05d}.png", buffer.getvalue()),
                (f"{i:05d}.txt", f"a {digits.target[i]}".encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    python = sys.executable
    cli = [python, "-m", "vlmforge_cli"]
    with tempfile.TemporaryDirectory(prefix="vlmforge-startup-") as tmp:
        cwd = Path(tmp)
        subprocess.run(
            [*cli, "pretrain", "-c", "debug/clip-tiny", "train.max_steps=5", "eval=[]", "--yes"],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
        )
        run_dir = next((cwd / "runs" / "clip-tiny").iterdir())
        write_shard(cwd / "digits.tar")
        commands = {
            "import torch": [python, "-c", "import torch"],
            "vlmforge --help": [*cli, "--help"],
            "recipes ls": [*cli, "recipes", "ls"],
            "validate --schema-only": [*cli, "validate", "--schema-only", "-c", "debug/clip-tiny"],
            "validate": [*cli, "validate", "-c", "debug/clip-tiny"],
            "data check": [*cli, "data", "check", str(cwd / "digits.tar")],
            "plan (clip)": [*cli, "plan", "-c", "debug/clip-tiny"],
            "plan (llava)": [*cli, "plan", "-c", "debug/llava-tiny"],
            "eval --run (clip)": [*cli, "eval", "--run", str(run_dir), "tasks=[{kind: zeroshot}]"],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.reps):  # interleaved, so that machine load affects every command alike
            for name, command in commands.items():
                first, total, code = timed(command, cwd, env)
                assert code == 0, f"{name} exited {code}"
                times[name].append((first, total))
        rows = []
        base = statistics.median(total for _, total in times["import torch"])
        for name, command in commands.items():
            first = statistics.median(f for f, _ in times[name])
            total = statistics.median(t for _, t in times[name])
            row = {
                "command": name,
                "first_output_s": None if first != first else round(first, 2),  # NaN: printed nothing
                "exit_s": round(total, 2),
                "ratio_to_import_torch": round(total / base, 2),
                "heavy_imports": imported(command, cwd, env),
            }
            rows.append(row)
            heavy = ", ".join(row["heavy_imports"])
            ratio = row["ratio_to_import_torch"]
            timing = f"first output {first:6.2f} s, exit {total:6.2f} s ({ratio:.2f}x)"
            print(f"{name:20s} {timing}; imports: {heavy}")
    path = write_result("startup", {"repetitions": args.reps, "goal_ratio": GOAL, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
