"""How curation grows with the pool: samples/s and peak memory of `vlmforge curate` (cheap steps + exact and
near dedup, local engine) on generated pools of small images, one fresh process per pool size.

Each pool: 32x32 PNG images (a random 8x8 pattern of 4-pixel blocks: no two are perceptual duplicates),
1% exact copies and 1% brightened copies of earlier images, templated captions of varied length; shards
of ``--shard-size`` samples. Measured per size: seconds of each pass, end-to-end samples/s, peak RSS of
the driver and of the largest worker (``resource.getrusage``), and the Python/numpy peak of the
decide pass alone (``tracemalloc``, a second decide over the saved measurements).

    OMP_NUM_THREADS=1 python benchmarks/curate_scale.py [--sizes 10000 30000 100000] [--workers 2]

Writes benchmarks/results/curate_scale.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_result

STEPS = [
    {"kind": "caption_length", "min_chars": 10, "max_words": 40},
    {"kind": "caption_complexity", "min_concepts": 2},
    {"kind": "repeated_tokens"},
    {"kind": "image_size", "min_side": 16},
    {"kind": "file_size", "max_bytes": 100000},
    {"kind": "exact_dedup"},
    {"kind": "near_dedup"},
]
WORDS = ["red", "green", "blue", "small", "large", "round", "square", "bright", "dark", "pattern", "grid"]


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_pool(root: Path, samples: int, shard_size: int, seed: int = 0) -> list[Path]:
    """``samples`` image-caption pairs in shards; the last 2% are exact and brightened copies."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    originals = int(samples * 0.98)
    kept_arrays: list[np.ndarray] = []
    shards, members = [], []
    for n in range(samples):
        if n < originals:
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            array = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # 4-pixel blocks: hashes differ
            if len(kept_arrays) < 1000:
                kept_arrays.append(array)
        else:
            source = kept_arrays[int(rng.integers(len(kept_arrays)))]
            array = source if n % 2 else np.clip(source.astype(int) + 10, 0, 255).astype(np.uint8)
        caption = "a " + " ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) + f" image number {n}"
        members.append((f"s{n:07d}", png(array), caption))
        if len(members) == shard_size or n == samples - 1:
            shards.append(root / f"pool-{len(shards):05d}.tar")
            _write_tar(shards[-1], members)
            members = []
    return shards


def _write_tar(path: Path, members: list[tuple[str, bytes, str]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, image, caption in members:
            for name, data in ((f"{key}.png", image), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def curate_once(pool: Path, output: Path, workers: int) -> dict[str, Any]:
    """One curation in this (fresh) process; peak RSS of it and its workers, and the decide pass's
    traced peak (a second decide over the measurements the run saved)."""
    import tracemalloc

    from vlmforge.config.curate import CurateRecipe
    from vlmforge.curate.io import list_shards
    from vlmforge.curate.pipeline import decide, process_steps
    from vlmforge.verbs import curate

    recipe = CurateRecipe.model_validate(
        {
            "name": "scale",
            "input": {"kind": "webdataset", "shards": str(pool / "pool-*.tar")},
            "output": str(output),
            "engine": {"kind": "local", "workers": workers},
            "steps": STEPS,
        }
    )
    started = time.perf_counter()
    result = curate.run(recipe, progress=False)
    seconds = time.perf_counter() - started
    report = json.loads((output / "report.json").read_text())
    recipe = curate.absolute_paths(recipe)
    _, steps = process_steps(recipe.model_dump_json())
    tracemalloc.start()
    decide(recipe, steps, list_shards(recipe.input), output / "work")
    decide_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "samples": result.total,
        "kept": result.kept,
        "dropped": {s["name"]: s["dropped"] for s in report["stages"] if s["dropped"]},
        "seconds": report["seconds"] | {"end_to_end": round(seconds, 3)},
        "samples_per_s": round(result.total / seconds, 1),
        "measure_samples_per_s": report["measure_samples_per_s"],
        "peak_rss_mb": {
            "driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        },
        "decide_traced_peak_mb": round(decide_peak / 2**20, 1),
        "measure_files_mb": round(
            sum(f.stat().st_size for f in (output / "work" / "measure").glob("*.npz")) / 2**20, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--one", nargs=2, metavar=("POOL", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(curate_once(Path(args.one[0]), Path(args.one[1]), args.workers)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-scale-") as tmp:
        for size in args.sizes:
            started = time.perf_counter()
            pool = Path(tmp) / f"pool-{size}"
            make_pool(pool, size, args.shard_size)
            generate = time.perf_counter() - started
            command = [sys.executable, __file__, "--one", str(pool), str(Path(tmp) / f"out-{size}")]
            proc = subprocess.run(
                [*command, "--workers", str(args.workers)], capture_output=True, text=True, check=True
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1]) | {"generate_seconds": round(generate, 1)}
            rows.append(row)
            memory = f"peak RSS {row['peak_rss_mb']} MB, decide traced {row['decide_traced_peak_mb']} MB"
            print(f"{size:>8d}: {row['samples_per_s']:,.0f} samples/s, {memory}", flush=True)
    payload = {
        "steps": [s["kind"] for s in STEPS],
        "workers": args.workers,
        "shard_size": args.shard_size,
        "pools": rows,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
        f"benchmarks/curate_scale.py --sizes {' '.join(map(str, args.sizes))} --workers {args.workers} "
        f"--shard-size {args.shard_size}",
    }
    print(f"wrote {write_result('curate_scale', payload)}")


if __name__ == "__main__":
    main()
