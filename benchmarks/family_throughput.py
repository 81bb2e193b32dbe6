"""Training throughput per model family: samples/s of every debug recipe's tiny model on this machine.

Each `recipes/debug/*.yaml` pretraining recipe runs through `vlmforge.verbs.pretrain.run` (the real training
path: Lightning Trainer, callbacks, checkpoint at the end), round-robin over recipes, several repetitions;
samples/s is timed from metrics.jsonl between step WARMUP and the last step, so start-up is excluded.

    OMP_NUM_THREADS=1 python benchmarks/family_throughput.py [--steps 60] [--reps 3]

Writes benchmarks/results/family_throughput.json (median samples/s per recipe and family, and each
recipe's throughput relative to the CLIP baseline `debug/clip-tiny`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _common import write_result
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import PretrainRecipe
from vlmforge.config.shipped import list_recipes
from vlmforge.errors import UserError
from vlmforge.families import family_for

WARMUP = 10
BASELINE = "debug/clip-tiny"


def pretrain_recipes(steps: int, output_dir: Path) -> dict[str, PretrainRecipe]:
    found = {}
    for name, path in list_recipes().items():
        if not name.startswith("debug/"):
            continue
        overrides = [
            f"train.max_steps={steps}",
            f"train.log_every_steps={WARMUP}",
            f"train.checkpoint.every_steps={steps}",
            "eval=[]",
            f"output_dir={output_dir}",
        ]
        try:
            recipe = load_recipe("pretrain", path, overrides)
        except UserError:  # a recipe of another verb (e.g. finetune)
            continue
        assert isinstance(recipe, PretrainRecipe)
        found[name] = recipe
    return found


def samples_per_second(recipe: PretrainRecipe) -> float:
    from vlmforge.verbs import pretrain

    result = pretrain.run(recipe)
    assert result is not None
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["step"] == WARMUP)
    steps = records[-1]["step"] - WARMUP
    return steps * recipe.data.batch_size / (records[-1]["time_s"] - first["time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    measured: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, recipe in pretrain_recipes(args.steps, Path(tmp) / f"rep{rep}").items():
                measured.setdefault(name, []).append(samples_per_second(recipe))
                print(f"rep {rep}: {name} {measured[name][-1]:.0f} samples/s", flush=True)
    recipes = pretrain_recipes(args.steps, Path("."))
    rows = {}
    for name, values in measured.items():
        median = statistics.median(values)
        rows[name] = {
            "family": family_for(recipes[name].model).name,
            "model_kind": recipes[name].model.kind,
            "batch_size": recipes[name].data.batch_size,
            "samples_per_s": values,
            "median_samples_per_s": round(median, 1),
        }
    if BASELINE in rows:
        base = rows[BASELINE]["median_samples_per_s"]
        for row in rows.values():
            row["relative_to_clip_tiny"] = round(row["median_samples_per_s"] / base, 3)
    result = {
        "benchmark": "family_throughput",
        "what": "training samples/s of each debug recipe's tiny model through vlmforge pretrain (CPU)",
        "steps_timed": args.steps - WARMUP,
        "repetitions": args.reps,
        "recipes": rows,
    }
    path = write_result("family_throughput", result)
    for name, row in rows.items():
        print(f"{name:28s} {row['family']:12s} {row['median_samples_per_s']:8.0f} samples/s")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
