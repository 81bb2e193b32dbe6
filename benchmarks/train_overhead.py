"""Training-loop overhead: `vlmforge pretrain`'s training step vs a plain PyTorch loop.

Both run the demo's model (recipes/demo/clip-digits.yaml), the same batches from the same sampler and
dataset, the same optimizer, schedule and loss, in one process, alternating, several repetitions.
vlmforge runs through `vlmforge.verbs.pretrain.run` (Lightning Trainer + its checkpoint and metrics
callbacks); steps/s is timed between step WARMUP and the last step, so start-up is excluded on both sides.

    OMP_NUM_THREADS=1 python benchmarks/train_overhead.py [--steps 100] [--reps 3]

Writes benchmarks/results/train_overhead.json and prints the ratio (goal: >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import write_result
from vlmforge.config.load import load_recipe
from vlmforge.config.schema import PretrainRecipe
from vlmforge.config.shipped import find_recipe

WARMUP = 10


def recipe_for(steps: int, output_dir: Path) -> PretrainRecipe:
    recipe = load_recipe(
        "pretrain",
        find_recipe("demo/clip-digits"),
        [
            f"train.max_steps={steps}",
            f"train.log_every_steps={WARMUP}",
            f"train.checkpoint.every_steps={steps}",  # one checkpoint, at the end, as a real run has
            "eval=[]",
            f"output_dir={output_dir}",
        ],
    )
    assert isinstance(recipe, PretrainRecipe)
    return recipe


def plain_loop(recipe: PretrainRecipe) -> float:
    """The same training step written by hand: returns steps/s after warm-up."""
    from open_clip.loss import ClipLoss

    from vlmforge.data.loader import CaptionedImages, GlobalBatchSampler, collate
    from vlmforge.data.sources import train_val_split
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.models.contrastive import context_length
    from vlmforge.training.contrastive import MAX_LOGIT_SCALE, ContrastiveModule

    torch.manual_seed(recipe.seed)
    train, _ = train_val_split(recipe.data)
    tokenizer = build_tokenizer(recipe.model.tokenizer, train.all_captions())
    module = ContrastiveModule(recipe, tokenizer.vocab_size)  # used only for its model and optimizer setup
    model = module.model
    optim = module.configure_optimizers()
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    dataset = CaptionedImages(train, tokenizer, context_length(recipe.model, model), recipe.seed)
    sampler = GlobalBatchSampler(len(train), recipe.data.batch_size, recipe.data.batch_size, seed=recipe.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    loss_fn = ClipLoss()
    model.train()
    step, start = 0, 0.0
    while step < recipe.train.max_steps:
        sampler.set_epoch(sampler.epoch + (step > 0))
        for batch in loader:
            image_features, text_features, scale = model(batch["image"], batch["text"])
            loss = loss_fn(image_features, text_features, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            step += 1
            if step == WARMUP:
                start = time.perf_counter()
            if step == recipe.train.max_steps:
                break
    return (recipe.train.max_steps - WARMUP) / (time.perf_counter() - start)


def vlmforge_loop(recipe: PretrainRecipe) -> float:
    from vlmforge.verbs import pretrain

    result = pretrain.run(recipe)
    assert result is not None
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["step"] == WARMUP)
    return (records[-1]["step"] - WARMUP) / (records[-1]["time_s"] - first["time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            recipe = recipe_for(args.steps, Path(tmp) / f"rep{rep}")
            plain.append(plain_loop(recipe))
            ours.append(vlmforge_loop(recipe))
            print(f"rep {rep}: plain {plain[-1]:.2f} steps/s, vlmforge {ours[-1]:.2f} steps/s", flush=True)
    ratio = statistics.median(ours) / statistics.median(plain)
    result = {
        "benchmark": "train_overhead",
        "what": "steps/s of vlmforge pretrain's training step vs a plain PyTorch loop, same model/batch/data",
        "recipe": "demo/clip-digits",
        "batch_size": 128,
        "steps_timed": args.steps - WARMUP,
        "repetitions": args.reps,
        "plain_steps_per_s": plain,
        "vlmforge_steps_per_s": ours,
        "ratio_vlmforge_over_plain": round(ratio, 4),
        "goal": ">= 0.95",
    }
    path = write_result("train_overhead", result)
    print(f"vlmforge / plain = {ratio:.3f} (median of {args.reps}; goal >= 0.95) -> {path}")


if __name__ == "__main__":
    main()
