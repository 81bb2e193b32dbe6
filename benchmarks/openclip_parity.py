"""Parity with OpenCLIP's own trainer: `vlmforge pretrain` vs `python -m open_clip_train.main`.

Both train the same tiny CLIP (one config, registered with open_clip through its `local-dir:` schema and
written as a vlmforge recipe with custom towers and open_clip's BPE tokenizer) on the same data (sklearn's
digits upscaled to 16x16, written once as PNGs + one captions.csv that both trainers read), fp32 on CPU, with
the same batch, optimizer (AdamW, lr, betas, eps, weight decay), warm-up + cosine schedule and step count,
from the same initial weights, images and caption tokens (each checked bit for bit).
The data set is cut to a whole number of batches per epoch so that open_clip_train, which counts epochs,
takes exactly as many steps. Repetitions alternate the two. Each side logs every step; steps/s is timed
from step WARMUP to the last step on the wall clock (open_clip_train's log lines are time-stamped as they
arrive, vlmforge's from metrics.jsonl), so start-up, the final checkpoint and shutdown are left out on both.

    OMP_NUM_THREADS=1 python benchmarks/openclip_parity.py [--steps 100] [--reps 3]

Writes benchmarks/results/openclip_parity.json and openclip_parity.png (both loss curves; each side is
seeded, so every repetition repeats its curve) and prints the ratio vlmforge / open_clip_train (goal: >= 1.0).
open_clip_train imports pandas, webdataset and braceexpand (OpenCLIP's `training` extra, less transformers):
`make install` installs them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS_DIR, write_result
from vlmforge.config.schema import PretrainRecipe

WARMUP = 10
SEED = 0
DIGITS = 1797  # images in sklearn's digits
IMAGE_SIZE = 16
MEAN = STD = (0.5, 0.5, 0.5)
# The demo's towers (recipes/demo/clip-digits.yaml) with open_clip's 49,408-token BPE vocabulary; mean-pooled
# patches and lr 5e-4 so that both curves fall from the first steps (a class token with lr 2e-3 sits on the
# ln(batch) plateau for a data-order-dependent number of steps, which hides whether the curves agree).
VISION = {
    "image_size": IMAGE_SIZE,
    "patch_size": 4,
    "width": 128,
    "layers": 3,
    "head_width": 32,
    "pool_type": "avg",
}
TEXT = {"context_length": 16, "width": 128, "heads": 4, "layers": 2}
EMBED_DIM = 64
VOCAB_SIZE = 49408
OPTIM = {"lr": 5.0e-4, "weight_decay": 0.1, "betas": (0.9, 0.98), "eps": 1.0e-6, "schedule": "cosine"}
TEMPLATES = ["a photo of the digit {}.", "a handwritten {}.", "the number {}.", "a drawing of a {}."]
CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# open_clip_train's step line, e.g. "Train Epoch: 0 [ 256/1280 (20%)] ... Loss: 4.8412 (4.8501)"
LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d,\d\d:\d\d:\d\d \| ")
AUG = {"scale": (1.0, 1.0)}  # open_clip_train's random crop covers the whole image: no augmentation
STEP_LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/\d+ .*?Batch \(t\): ([\d.]+).*\bLoss: ([\d.]+)")


def batches_per_epoch(steps: int, batch_size: int, available: int) -> int:
    """The largest divisor of ``steps`` whose batches fit in the data, so that open_clip_train, which
    counts epochs, runs exactly ``steps``."""
    return max(d for d in range(1, steps + 1) if steps % d == 0 and d * batch_size <= available)


def write_digits(folder: Path, count: int) -> Path:
    """The first ``count`` digits as PNGs (8x8 upscaled bilinearly, as vlmforge's digits source does) and
    ``captions.csv`` (image, caption; one fixed caption per image), read by both trainers."""
    from PIL import Image
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = torch.from_numpy(raw.images[:count].astype(np.float32) / 16.0)[:, None]
    up = torch.nn.functional.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")
    folder.mkdir(parents=True)
    rows = []
    for i, (image, label) in enumerate(zip(up[:, 0], raw.target[:count], strict=True)):
        name = f"{i:04d}.png"
        Image.fromarray((image.clamp(0, 1) * 255).round().byte().numpy(), mode="L").save(folder / name)
        rows.append({"image": name, "caption": TEMPLATES[i % len(TEMPLATES)].format(CLASSNAMES[label])})
    with (folder / "captions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "captions.csv"


def write_openclip_model(folder: Path) -> str:
    """The model as an open_clip ``local-dir:`` config (no weights: random init)."""
    vision = VISION | {"mlp_ratio": 4.0}
    text = TEXT | {"vocab_size": VOCAB_SIZE, "mlp_ratio": 4.0}
    config = {
        "model_cfg": {"embed_dim": EMBED_DIM, "vision_cfg": vision, "text_cfg": text},
        "preprocess_cfg": {"size": IMAGE_SIZE, "mean": list(MEAN), "std": list(STD)},
    }
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    return f"local-dir:{folder}"


def vlmforge_recipe(data: Path, steps: int, batch_size: int, warmup: int, output_dir: Path) -> PretrainRecipe:
    return PretrainRecipe.model_validate(
        {
            "name": "openclip-parity",
            "seed": SEED,
            "output_dir": output_dir,
            "model": {
                "kind": "clip",
                "embed_dim": EMBED_DIM,
                "vision": VISION,
                "text": TEXT,
                "tokenizer": {"kind": "open_clip"},
            },
            "data": {
                "kind": "folder",
                "path": data,
                "captions": "captions.csv",
                "image_size": IMAGE_SIZE,
                "mean": MEAN,
                "std": STD,
                "batch_size": batch_size,
            },
            "optim": OPTIM | {"warmup_steps": warmup},
            "train": {
                "max_steps": steps,
                "accelerator": "cpu",
                "grad_clip_norm": None,  # open_clip_train's default
                "log_every_steps": 1,
                # saved at the end of training, after the last logged step, as open_clip_train saves its own
                "checkpoint": {"every_steps": steps + 1, "keep_last": 1},
            },
            "eval": [],
        }
    )


def openclip_args(
    model: str, captions: Path, epochs: int, batch_size: int, warmup: int, logs: Path
) -> list[str]:
    """``python -m open_clip_train.main`` arguments: every optimizer setting pinned (its defaults depend on
    the model name), fp32 (its default AMP is slower on CPU), no zero-shot/val, one checkpoint at the end,
    no random-crop augmentation."""
    lr, wd, (beta1, beta2), eps = OPTIM["lr"], OPTIM["weight_decay"], OPTIM["betas"], OPTIM["eps"]
    # fmt: off
    return [
        "--model", model, "--train-data", str(captions), "--dataset-type", "csv", "--csv-separator", ",",
        "--csv-img-key", "image", "--csv-caption-key", "caption",
        "--batch-size", str(batch_size), "--epochs", str(epochs), "--lr", str(lr), "--wd", str(wd),
        "--beta1", str(beta1), "--beta2", str(beta2), "--eps", str(eps), "--warmup", str(warmup),
        "--lr-scheduler", "cosine", "--precision", "fp32", "--device", "cpu", "--workers", "0",
        "--seed", str(SEED), "--log-every-n-steps", "1", "--zeroshot-frequency", "0", "--val-frequency", "0",
        "--save-frequency", "0", "--report-to", "", "--logs", str(logs), "--name", "run",
        # full-image "crops": its preprocessing is then bit-identical to vlmforge's resize + centre crop
        "--aug-cfg", f"scale={AUG['scale']}",
    ]
    # fmt: on


def run_openclip(args: list[str], cwd: Path, batch_size: int, per_epoch: int) -> dict[str, Any]:
    """Runs open_clip_train; its per-step log lines are time-stamped here as they arrive."""
    command = [sys.executable, "-m", "open_clip_train.main", *args]
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    times: dict[int, float] = {}
    losses: dict[int, float] = {}
    batch_times: dict[int, float] = {}
    warnings: list[str] = []
    output: list[str] = []
    for line in proc.stdout:
        output.append(line)
        now = time.perf_counter()
        match = STEP_LINE.search(line)
        if match:
            epoch, seen, batch_t, loss = match.groups()
            step = int(epoch) * per_epoch + int(seen) // batch_size
            times[step], losses[step], batch_times[step] = now, float(loss), float(batch_t)
        elif "WARNING" in line or "Warning" in line:
            warnings.append(LOG_TIME.sub("", line.strip()))
    if proc.wait() != 0:
        tail = "".join(output[-20:])
        raise RuntimeError(f"open_clip_train exited with {proc.returncode}: {' '.join(command)}\n{tail}")
    last = max(times)
    return {
        "steps_per_s": (last - WARMUP) / (times[last] - times[WARMUP]),
        # its own per-step "Batch (t)" (data + step), which leaves out the time between its epochs
        "own_batch_time_steps_per_s": (last - WARMUP)
        / sum(batch_times[s] for s in range(WARMUP + 1, last + 1)),
        "losses": [losses[s] for s in sorted(losses)],
        "warnings": warnings,
    }


def run_vlmforge(recipe: PretrainRecipe) -> dict[str, Any]:
    from vlmforge import pretrain

    result = pretrain.run(recipe)
    assert result is not None
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records}
    last = max(by_step)
    return {
        "steps_per_s": (last - WARMUP) / (by_step[last]["time_s"] - by_step[WARMUP]["time_s"]),
        "losses": [by_step[s]["loss"] for s in sorted(by_step)],
    }


def same_start(model: str, recipe: PretrainRecipe) -> dict[str, bool]:
    """Whether both start from bit-identical initial weights (open_clip_train seeds torch, then creates the
    model; vlmforge seeds, then builds the same open_clip CLIP), images and caption tokens."""
    import lightning.pytorch as pl
    import open_clip
    from PIL import Image

    from vlmforge.data.sources import open_source
    from vlmforge.data.tokenizers import build_tokenizer
    from vlmforge.families import family_for
    from vlmforge.models.contrastive import quiet_random_init

    torch.manual_seed(SEED)
    with quiet_random_init():
        theirs, preprocess, _ = open_clip.create_model_and_transforms(model, aug_cfg=AUG)
    pl.seed_everything(SEED, verbose=False)
    ours = family_for(recipe.model).models.build_model(recipe.model, VOCAB_SIZE)
    weights = theirs.state_dict().keys() == ours.state_dict().keys() and all(
        torch.equal(a, b)
        for a, b in zip(theirs.state_dict().values(), ours.state_dict().values(), strict=True)
    )
    data = open_source(recipe.data)
    folder = recipe.data.path  # type: ignore[union-attr]
    images = all(
        torch.equal(preprocess(Image.open(folder / key)), data.image(i)) for i, key in enumerate(data.keys)
    )
    captions = [c[0] for c in data.captions]
    context = TEXT["context_length"]
    tokens = torch.equal(
        open_clip.get_tokenizer(model)(captions),
        build_tokenizer(recipe.model.tokenizer, captions)(captions, context),
    )
    return {"identical_initial_weights": weights, "identical_images": images, "identical_tokens": tokens}


def tokenize_ms_per_batch(model: str, captions: list[str], batch_size: int) -> float:
    """What open_clip_train's CsvDataset spends per batch tokenizing captions one read at a time
    (median of 5 batches; its BPE cache is warm after the first, as in training)."""
    import open_clip

    tokenize = open_clip.get_tokenizer(model)
    times = []
    for _ in range(5):
        begin = time.perf_counter()
        for caption in captions[:batch_size]:
            tokenize([caption])
        times.append(time.perf_counter() - begin)
    return round(1000 * statistics.median(times), 2)


def plot(path: Path, openclip: list[float], ours: list[float], batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = range(1, len(ours) + 1)
    ax.plot(steps, openclip, color="tab:orange", label="open_clip_train")
    ax.plot(steps, ours, color="tab:blue", ls="--", label="vlmforge pretrain")
    # a caption names only the digit: the best a model can do is a uniform pick among the same digit
    floor = math.log(batch_size / len(CLASSNAMES))
    ax.axhline(floor, color="grey", lw=0.8, ls=":", label=f"ln(batch / 10) = {floor:.2f}")
    ax.set(xlabel="optimizer step", ylabel="training loss (InfoNCE)")
    ax.set_title("Same tiny CLIP, data, initial weights and optimizer (fp32, CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_openclip_train_importable() -> None:
    import importlib.util

    missing = [m for m in ("pandas", "webdataset", "braceexpand") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"open_clip_train needs {', '.join(missing)} (OpenCLIP's training extra), not installed; "
            "`make install` installs them (the project's dependencies and its `dev` extra)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    if args.steps <= WARMUP + 1:
        parser.error(f"--steps must be above {WARMUP + 1} (steps/s is timed after step {WARMUP})")
    if not 1 <= args.batch_size <= DIGITS:
        parser.error(f"--batch-size must be 1..{DIGITS} (the digits data set)")
    check_openclip_train_importable()
    warmup = max(1, args.steps // 10)
    per_epoch = batches_per_epoch(args.steps, args.batch_size, DIGITS)
    count, epochs = per_epoch * args.batch_size, args.steps // per_epoch

    runs: dict[str, list[dict[str, Any]]] = {"openclip": [], "vlmforge": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        captions = write_digits(root / "digits", count)
        model = write_openclip_model(root / "model")
        recipe = vlmforge_recipe(captions.parent, args.steps, args.batch_size, warmup, root / "vlmforge")
        start = same_start(model, recipe)
        with captions.open(newline="", encoding="utf-8") as handle:
            texts = [row["caption"] for row in csv.DictReader(handle)]
        tokenize_ms = tokenize_ms_per_batch(model, texts, args.batch_size)
        for rep in range(args.reps):
            oc_args = openclip_args(model, captions, epochs, args.batch_size, warmup, root / f"oc{rep}")
            sides = {
                "openclip": lambda a=oc_args: run_openclip(a, captions.parent, args.batch_size, per_epoch),
                "vlmforge": lambda: run_vlmforge(recipe),
            }
            for side in sorted(sides, reverse=rep % 2 == 1):  # alternate which side goes first
                runs[side].append(sides[side]())
            theirs, ours = runs["openclip"][-1]["steps_per_s"], runs["vlmforge"][-1]["steps_per_s"]
            print(f"rep {rep}: open_clip_train {theirs:.2f} steps/s, vlmforge {ours:.2f} steps/s", flush=True)
        load_after = os.getloadavg()[0]
        warnings = sorted({w.replace(tmp, "TMP") for r in runs["openclip"] for w in r["warnings"]})
    shown_args = openclip_args(
        "local-dir:MODEL_DIR", Path("DATA/captions.csv"), epochs, args.batch_size, warmup, Path("LOGS")
    )

    median = {k: statistics.median(r["steps_per_s"] for r in v) for k, v in runs.items()}
    ratio = median["vlmforge"] / median["openclip"]
    curves = {k: v[0]["losses"] for k, v in runs.items()}
    png = RESULTS_DIR / "openclip_parity.png"
    plot(png, curves["openclip"], curves["vlmforge"], args.batch_size)
    result = {
        "benchmark": "openclip_parity",
        "what": "steps/s of vlmforge pretrain vs open_clip_train (OpenCLIP's trainer): same model, initial "
        "weights, data, batch, optimizer and schedule; fp32 on CPU; both log every step",
        "config": {
            "embed_dim": EMBED_DIM,
            "vision": VISION,
            "text": TEXT | {"vocab_size": VOCAB_SIZE, "tokenizer": "open_clip BPE (SimpleTokenizer)"},
            "data": f"sklearn digits, first {count} (8x8 -> {IMAGE_SIZE}x{IMAGE_SIZE} PNG), one caption each",
            "batch_size": args.batch_size,
            "batches_per_epoch": per_epoch,
            "optim": OPTIM | {"warmup_steps": warmup, "grad_clip_norm": None},
            "precision": "fp32",
            "device": "cpu",
            "dataloader_workers": 0,
            **start,
            "openclip_command": shlex.join(["python", "-m", "open_clip_train.main", *shown_args]),
        },
        "differences": [
            "data order: open_clip_train shuffles with torch's RNG, vlmforge with its own seeded permutation",
            "open_clip_train tokenizes a caption on every read; vlmforge caches each caption's tokens",
        ],
        "openclip_tokenize_ms_per_batch": tokenize_ms,
        "steps": args.steps,
        "steps_timed": args.steps - WARMUP,
        "repetitions": args.reps,
        "openclip_steps_per_s": [r["steps_per_s"] for r in runs["openclip"]],
        "openclip_own_batch_time_steps_per_s": [r["own_batch_time_steps_per_s"] for r in runs["openclip"]],
        "vlmforge_steps_per_s": [r["steps_per_s"] for r in runs["vlmforge"]],
        "median_openclip_steps_per_s": round(median["openclip"], 3),
        "median_vlmforge_steps_per_s": round(median["vlmforge"], 3),
        "median_openclip_samples_per_s": round(median["openclip"] * args.batch_size, 1),
        "median_vlmforge_samples_per_s": round(median["vlmforge"] * args.batch_size, 1),
        "ratio_vlmforge_over_openclip": round(ratio, 4),
        "goal": ">= 1.0",
        "final_loss_openclip": [r["losses"][-1] for r in runs["openclip"]],
        "final_loss_vlmforge": [r["losses"][-1] for r in runs["vlmforge"]],
        "loss_curves_repeat_exactly": all(r["losses"] == v[0]["losses"] for v in runs.values() for r in v),
        "loss_curves_rep0": curves,
        "openclip_warnings": warnings,
        # the machine is shared: the 1-minute load average before and after (1 = one busy core)
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "plot": "benchmarks/results/openclip_parity.png",
    }
    path = write_result("openclip_parity", result)
    print(f"vlmforge / open_clip_train = {ratio:.3f} (median of {args.reps}; goal >= 1.0) -> {path}, {png}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
