"""Few-shot finetuning methods on the digits, each against the untuned model's zero-shot accuracy.

Starting point: the debug tiny CLIP (recipes/debug/clip-tiny.yaml) pretrained for PRETRAIN_STEPS steps on
captions of the digits 0-4 only (``data.classes``): the words 'five' .. 'nine' are in its vocabulary (it
holds the zero-shot prompts of all ten classes) but their embeddings never trained, so zero-shot cannot
tell the unseen digits apart. Every method then tunes
that run on 16 images per class of all ten digits (seed 0) and is scored on one fixed held-out test split
(20% of each class), overall and on the seen (0-4) and unseen (5-9) digits, with trainable parameters and
seconds (training plus evaluation, one CPU process). The seen digits' test images may have been among
the pretraining images (that run held out its own split of digits 0-4); the unseen digits never were.

A second setup, ``all_classes_short``, starts from the same model pretrained on captions of all ten digits
for only SHORT_PRETRAIN_STEPS steps: every class name has a trained embedding but the image tower is weak,
so the methods that only adapt the image side (VPT, a visual CLIP-Adapter) have something to fix — the
few-shot situation CoOp and VPT were proposed for (a model whose zero-shot is mediocre on a new domain).

    OMP_NUM_THREADS=1 python benchmarks/peft.py

Writes benchmarks/results/peft.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write_result

# this file's name is the peft package's: once _common is imported, its folder leaves the import path
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

from vlmforge.config.load import load_recipe, read_yaml  # noqa: E402
from vlmforge.verbs import finetune, pretrain  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_STEPS = 300
SHORT_PRETRAIN_STEPS = 60
SEEN = [0, 1, 2, 3, 4]
SETUPS = {  # name: (digits the start run is pretrained on, its steps)
    "half_classes": (SEEN, PRETRAIN_STEPS),
    "all_classes_short": (list(range(10)), SHORT_PRETRAIN_STEPS),
}
STEPS = 200
OPTIM = {"lr": 2.0e-3, "weight_decay": 0.0, "warmup_steps": 10}
METHODS: dict[str, dict[str, Any]] = {
    "linear_probe": {"method": "linear_probe"},
    "coop": {"method": "coop", "context_tokens": 4, "init": "a photo of the", "max_steps": STEPS},
    "coop_class_specific": {
        "method": "coop",
        "context_tokens": 4,
        "class_specific": True,
        "max_steps": STEPS,
    },
    "vpt_deep": {"method": "vpt", "prompt_tokens": 4, "deep": True, "max_steps": STEPS},
    "clip_adapter": {"method": "clip_adapter", "branches": ["visual"], "max_steps": STEPS},
    "lora": {"method": "lora", "towers": ["visual", "text"], "rank": 4, "alpha": 8, "max_steps": STEPS},
    "full_wise_ft": {"method": "full", "max_steps": STEPS},
}


def start_run(root: Path, classes: list[int], steps: int) -> Path:
    base = read_yaml(REPO / "recipes" / "debug" / "clip-tiny.yaml")
    base["data"]["classes"] = classes
    base["train"]["max_steps"] = steps
    base["output_dir"] = str(root / "runs")
    recipe = load_recipe("pretrain", None, base=base)
    result = pretrain.run(recipe, resume="never")
    assert result is not None and result.status == "completed"
    return result.run_dir


def split_mean(per_class: list[float | None], classes: list[int]) -> float:
    values = [per_class[c] for c in classes if per_class[c] is not None]
    return round(sum(values) / len(values), 4)


def tune(start: Path, root: Path, name: str, method: dict[str, Any]) -> dict[str, Any]:
    base = {
        "name": f"peft-{name.replace('_', '-')}",
        "seed": 0,
        "output_dir": str(root / "runs"),
        "init_from": str(start),
        "data": {"kind": "digits", "shots": 16, "batch_size": 32},
        "method": method,
        "optim": OPTIM,
        "train": {"accelerator": "cpu"},
    }
    recipe = load_recipe("finetune", None, base=base)
    started = time.perf_counter()
    result = finetune.run(recipe)
    seconds = time.perf_counter() - started
    assert result is not None
    metrics = result.metrics
    unseen = [c for c in range(10) if c not in SEEN]
    row = {"method": name, "config": method, "seconds": round(seconds, 2), "trainable": metrics["trainable"]}
    for which in ("zero_shot", "tuned"):
        per_class = metrics[which]["per_class"]
        row[which] = {
            "top1": round(metrics[which]["top1"], 4),
            "seen_top1": split_mean(per_class, SEEN),
            "unseen_top1": split_mean(per_class, unseen),
        }
    if "wise_ft" in metrics:
        row["wise_ft"] = {k: metrics["wise_ft"][k] for k in ("curve", "best_alpha", "best_top1")}
    return row


def main() -> None:
    results = {}
    for setup_name, (classes, steps) in SETUPS.items():
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            start = start_run(root, classes, steps)
            rows = [tune(start, root, name, method) for name, method in METHODS.items()]
        print(f"setup {setup_name}:", file=sys.stderr)
        results[setup_name] = report(rows, classes, steps)
    write_result("peft", results)


def report(rows: list[dict[str, Any]], classes: list[int], steps: int) -> dict[str, Any]:
    print(
        f"{'method':22} {'top1':>6} {'seen':>6} {'unseen':>6} {'params':>8} {'share%':>8} {'s':>6}",
        file=sys.stderr,
    )
    zero = rows[0]["zero_shot"]
    print(
        f"{'zero-shot (untuned)':22} {zero['top1']:6.3f} {zero['seen_top1']:6.3f} {zero['unseen_top1']:6.3f}",
        file=sys.stderr,
    )
    for row in rows:
        t, share = row["tuned"], row["trainable"]
        print(
            f"{row['method']:22} {t['top1']:6.3f} {t['seen_top1']:6.3f} {t['unseen_top1']:6.3f} "
            f"{share['trainable']:8d} {share['percent']:8.3f} {row['seconds']:6.1f}",
            file=sys.stderr,
        )
    setup = {
        "start": f"debug/clip-tiny pretrained {steps} steps on captions of digits {classes}",
        "few_shot": "16 images per class of all ten digits, seed 0",
        "test": "fixed 20% stratified held-out split of all ten digits",
        "steps": STEPS,
        "optim": OPTIM,
    }
    return {"setup": setup, "zero_shot": zero, "methods": rows}


if __name__ == "__main__":
    main()
