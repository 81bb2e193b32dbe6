"""Curation throughput: samples/s of each step on this machine, and the whole pipeline on the local engine
vs the Ray engine (same pool, recipe and worker count, run side by side).

The pool is the test pool (tests/curate_pool.py: digits, bundled photos, planted problems) grown with
more digits; the scorer is a randomly initialised open_clip model saved locally (`--arch tiny`, a 1-layer
32-px ViT, or any open_clip architecture such as ViT-B-32: random weights, real cost).

    OMP_NUM_THREADS=1 python benchmarks/curate.py [--samples 1000] [--shards 8] [--arch tiny]

Writes benchmarks/results/curate.json and prints the Ray / local ratio of pipeline samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.curate_pool

from tests.curate_pool import build_pool, save_random_clip

from _common import write_result
from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.curate.base import Resources
from vlmforge.curate.batch import Batch, Table
from vlmforge.curate.io import decode, list_shards, read_samples
from vlmforge.curate.steps import build_steps
from vlmforge.verbs import curate


def save_scorer(arch: str, root: Path) -> list[str]:
    """A random-init open_clip checkpoint on disk; the recipe overrides that point at it."""
    arch = "tiny-clip" if arch == "tiny" else arch
    files = save_random_clip(root, arch)
    return [f"model.arch={arch}", *(f"model.{name}={path}" for name, path in files.items())]


def recipe_overrides(pool: Any, scorer: list[str], output: Path) -> list[str]:
    return [
        f"input.shards={pool.shards}",
        f"output={output}",
        *scorer,
        "steps.3.min_side=32",
        "steps.4.max_bytes=200000",
        "steps.9.min_similarity=0.998",
        "steps.10.threshold=null",
        "steps.10.top_fraction=0.9",
        "steps.11.clusters=16",
        f"steps.11.target_images={pool.targets}",
        "steps.12.vocabulary_file=null",
        "steps.12.vocabulary=[digit, number, cat, coffee, rocket, space, microscope, flower]",
        "steps.12.t=50",
    ]


def per_step(recipe: Any, reps: int) -> dict[str, dict[str, float]]:
    """Each step alone (its own cache, so shared embeddings are not free) on every decoded sample."""
    samples = [s for ref in list_shards(recipe.input) for s in read_samples(ref, recipe.input)[0]]
    started = time.perf_counter()
    chunk, reasons = decode(samples)
    decode_s = time.perf_counter() - started
    rows = np.nonzero(reasons == "")[0]
    resources = Resources(recipe)
    resources.scorer()  # loading is start-up, not throughput
    results = {"read+decode": {"samples": len(samples), "samples_per_s": len(samples) / decode_s}}
    for step in build_steps(recipe, resources):
        times = []
        for _ in range(reps):
            chunk.cache.clear()
            started = time.perf_counter()
            columns = step.measure(Batch(chunk, rows))
            step.apply(Table(np.array(chunk.keys)[rows], columns, recipe.seed))
            times.append(time.perf_counter() - started)
        best = min(times)
        results[step.name] = {"samples": len(rows), "samples_per_s": len(rows) / best, "seconds": best}
    results["text_spotting[ocr]"] = ocr_step(recipe, chunk, rows)
    return results


def ocr_step(recipe: Any, chunk: Any, rows: np.ndarray) -> dict[str, float]:
    """Text spotting with the OCR detector (too slow for the shipped recipe, so not in it), once, on the
    pool's photos and rendered-text images (128-192 px; the 64 px digits would flatter it)."""
    from vlmforge.config.curate import OcrDetector, TextSpotting
    from vlmforge.curate.scoring import TextSpottingStep

    cfg = TextSpotting(max_text_area=None, max_caption_overlap=0.5, detector=OcrDetector())
    resources = Resources(recipe)
    step = TextSpottingStep(cfg, resources)
    resources.detector(cfg.detector)  # loading is start-up, not throughput
    big = rows[np.minimum(chunk.width[rows], chunk.height[rows]) > 64]
    started = time.perf_counter()
    columns = step.measure(Batch(chunk, big))
    step.apply(Table(np.array(chunk.keys)[big], columns, recipe.seed))
    seconds = time.perf_counter() - started
    return {"samples": len(big), "samples_per_s": len(big) / seconds, "seconds": seconds}


def pipeline(recipe: Any) -> dict[str, float]:
    started = time.perf_counter()
    result = curate.run(recipe, progress=False)
    total = time.perf_counter() - started
    report = json.loads((result.output / "report.json").read_text())
    return {
        "samples": result.total,
        "kept": result.kept,
        "seconds_total": total,
        "seconds_measure": report["seconds"]["measure"],
        "samples_per_s_total": result.total / total,
        "samples_per_s_measure": report["measure_samples_per_s"],
        "sha256": [s["sha256"] for s in result.shards],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="extra digits added to the test pool")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--arch", default="tiny", help="'tiny' or an open_clip architecture (random weights)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlmforge-bench-curate-") as tmp:
        root = Path(tmp)
        pool = build_pool(root / "pool", shards=args.shards, extra_digits=args.samples)
        scorer = save_scorer(args.arch, root)
        recipe_path = find_recipe("curate/datacomp-metaclip")
        base = load_recipe("curate", recipe_path, recipe_overrides(pool, scorer, root / "steps"))
        steps = per_step(curate.absolute_paths(base), args.reps)
        engines = {}
        # ray twice: the first run pays for starting Ray and its workers, the second finds them warm, as
        # a job on a running cluster (address: auto) does
        for name, kind in (("local", "local"), ("ray_cold", "ray"), ("ray_warm", "ray")):
            recipe = load_recipe(
                "curate",
                recipe_path,
                [
                    *recipe_overrides(pool, scorer, root / name),
                    f"engine.kind={kind}",
                    f"engine.workers={args.workers}",
                ],
            )
            engines[name] = pipeline(recipe)
        import ray

        ray.shutdown()
    hashes = [engines[name].pop("sha256") for name in engines]
    identical = all(h == hashes[0] for h in hashes)
    ratio = engines["ray_warm"]["samples_per_s_total"] / engines["local"]["samples_per_s_total"]
    payload = {
        "pool_samples": engines["local"]["samples"],
        "shards": args.shards,
        "workers": args.workers,
        "scorer": args.arch,
        "per_step": steps,
        "engines": engines,
        "ray_warm_over_local_total": round(ratio, 3),
        "identical_output": identical,
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/curate.py "
        f"--samples {args.samples} --shards {args.shards} --arch {args.arch} --workers {args.workers}",
    }
    path = write_result("curate", payload)
    for name, row in steps.items():
        print(f"{name:>20s}: {row['samples_per_s']:>10,.1f} samples/s")
    for kind, row in engines.items():
        print(
            f"{kind:>20s}: {row['samples_per_s_total']:,.1f} samples/s end to end "
            f"({row['seconds_total']:.1f} s, measure pass {row['samples_per_s_measure']} samples/s)"
        )
    print(f"ray (warm) / local = {ratio:.2f}; identical output: {identical}; wrote {path}")


if __name__ == "__main__":
    main()
