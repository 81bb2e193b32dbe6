"""Captioning throughput of a vlmforge run as a `vlmforge curate` captioner: captions/s on the test pool's
readable images (tests/curate_pool.py, grown with more digits), in batches of the curate default (64),
one thread as in a curation worker, greedy and beam search; the median of ``--repeats`` passes.

    python benchmarks/recaption.py --run runs/coca-tiny/<stamp> runs/llava-tiny/<stamp> [--samples 1000]

Writes benchmarks/results/recaption.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.curate_pool

from tests.curate_pool import build_pool

from _common import write_result
from vlmforge.config.curate import CurateRecipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch
from vlmforge.curate.io import decode, list_shards, read_samples
from vlmforge.curate.steps import build_steps


def captions_per_s(run: Path, shards: str, options: dict, batch_size: int, repeats: int) -> dict[str, float]:
    recipe = CurateRecipe.model_validate(
        {
            "name": "bench",
            "input": {"kind": "webdataset", "shards": shards},
            "output": "unused",
            "batch_size": batch_size,
            "steps": [{"kind": "recaption", "captioner": {"kind": "run", "run": str(run), **options}}],
        }
    )
    (step,) = build_steps(recipe, Resources(recipe))
    samples = [s for ref in list_shards(recipe.input) for s in read_samples(ref, recipe.input)[0]]
    chunk, reasons = decode(samples)
    rows = np.nonzero(reasons == "")[0]
    timings = []
    for _ in range(repeats):
        words = 0
        chunk.cache.clear()  # a run's captions are cached per chunk: caption afresh each pass
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            captions = step.measure(Batch(chunk, rows[start : start + batch_size]))["caption"]
            words += sum(len(c.split()) for c in captions)
        timings.append(time.perf_counter() - started)
    seconds = float(np.median(timings))
    return {
        "images": len(rows),
        "captions_per_s": round(len(rows) / seconds, 1),
        "mean_words": round(words / len(rows), 2),
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--run", type=Path, nargs="+", required=True, help="CoCa pretrain / LLaVA finetune runs"
    )
    parser.add_argument("--samples", type=int, default=1000, help="about this many pool samples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pool = build_pool(Path(tmp) / "pool", shards=4, extra_digits=max(0, args.samples - 58))
        results = {
            f"{run.parent.name}/{name}": captions_per_s(
                run, pool.shards, options, args.batch_size, args.repeats
            )
            for run in args.run
            for name, options in {"greedy": {}, "beam-3": {"method": "beam", "beam_size": 3}}.items()
        }
    print(results)
    runs = {run.parent.name: json.loads((run / "result.json").read_text())["steps"] for run in args.run}
    print(
        write_result(
            "recaption",
            {"trained_steps": runs, "batch_size": args.batch_size, "threads": 1, "repeats": args.repeats}
            | results,
        )
    )


if __name__ == "__main__":
    main()
