"""Text spotting accuracy: how well each text detector and ``max_text_area`` threshold separates
text-dominated images (posters, slides, signs, book covers, memes, text screenshots) from natural photos
(including photos with a small watermark, which must be kept), on the labelled set of tests/text_images.py.

Thresholds are picked on one half of the set (the highest drop + keep rate meeting the targets: >= 90%
of text-dominated images dropped, >= 95% of natural ones kept) and checked on the other half.

    OMP_NUM_THREADS=2 python benchmarks/text_spotting.py [--no-ocr]

Writes benchmarks/results/text_spotting.json: per detector, images/s and the confusion counts of every
threshold on both halves; the picked threshold; and the shipped recipe's text step on the check half.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.text_images

from tests.text_images import TEXT, LabelledImage, labelled_images, split_halves

from _common import write_result
from vlmforge.config.curate_models import MserDetector, OcrDetector
from vlmforge.curate.textdetect import build_detector, text_area

TARGET_DROP, TARGET_KEEP = 0.90, 0.95
THRESHOLDS = [round(float(t), 3) for t in np.arange(0.025, 0.5, 0.025)]


def measure(detector_cfg: Any, rows: list[LabelledImage]) -> tuple[dict[str, float], float]:
    """Text-area fraction of each image, and images/s."""
    detect = build_detector(detector_cfg)
    areas = {}
    start = time.perf_counter()
    for row in rows:
        pixels = np.asarray(row.image)
        areas[row.name] = text_area(detect(pixels), pixels.shape[1], pixels.shape[0])
    return areas, len(rows) / (time.perf_counter() - start)


def confusion(rows: list[LabelledImage], areas: dict[str, float], threshold: float) -> dict[str, Any]:
    """Counts of text-dominated dropped / kept and natural dropped / kept, with the two rates."""
    text = np.array([areas[r.name] > threshold for r in rows if r.label == TEXT])
    natural = np.array([areas[r.name] > threshold for r in rows if r.label != TEXT])
    return {
        "text_dropped": int(text.sum()),
        "text_kept": int((~text).sum()),
        "natural_dropped": int(natural.sum()),
        "natural_kept": int((~natural).sum()),
        "text_drop_rate": round(float(text.mean()), 4),
        "natural_keep_rate": round(float((~natural).mean()), 4),
    }


def meets(table: dict[str, Any]) -> bool:
    return table["text_drop_rate"] >= TARGET_DROP and table["natural_keep_rate"] >= TARGET_KEEP


def pick_threshold(sweep: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The threshold meeting the targets on the pick half with the highest drop + keep rate."""
    passing = [row for row in sweep if meets(row["pick"])]
    best = max(
        passing,
        key=lambda r: r["pick"]["text_drop_rate"] + r["pick"]["natural_keep_rate"],
        default=None,
    )
    return None if best is None else best | {"meets_targets_on_check_half": meets(best["check"])}


def evaluate(detector_cfg: Any, rows: list[LabelledImage]) -> dict[str, Any]:
    pick, check = split_halves(rows)
    areas, speed = measure(detector_cfg, rows)
    sweep = [
        {
            "max_text_area": t,
            "pick": confusion(pick, areas, t),
            "check": confusion(check, areas, t),
            "all": confusion(rows, areas, t),
        }
        for t in THRESHOLDS
    ]
    return {
        "detector": detector_cfg.model_dump(mode="json"),
        "images_per_s": round(speed, 2),
        "picked": pick_threshold(sweep),
        "sweep": sweep,
        "text_area": {name: round(value, 4) for name, value in areas.items()},
    }


def shipped_text_step() -> Any:
    from vlmforge.config.load import load_recipe
    from vlmforge.config.shipped import find_recipe

    recipe = load_recipe("curate", find_recipe("curate/datacomp-metaclip"))
    return next(step for step in recipe.steps if step.kind == "text_spotting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-ocr", action="store_true", help="skip EasyOCR (slow on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = labelled_images(args.seed)
    detectors: dict[str, Any] = {f"mser_min_chars_{n}": MserDetector(min_chars=n) for n in (3, 4, 5)}
    detectors["mser_min_chars_4_max_side_768"] = MserDetector(min_chars=4, max_side=768)
    if not args.no_ocr:
        detectors["ocr"] = OcrDetector()
    results = {}
    for name, cfg in detectors.items():
        results[name] = evaluate(cfg, rows)
        picked = results[name]["picked"]
        print(name, results[name]["images_per_s"], "img/s; picked", picked and picked["max_text_area"])
    step = shipped_text_step()
    _, check = split_halves(rows)
    shipped_areas, _ = measure(step.detector, check)
    shipped = {
        "detector": step.detector.model_dump(mode="json"),
        "max_text_area": step.max_text_area,
        "check": confusion(check, shipped_areas, step.max_text_area),
    }
    print("shipped recipe on the check half:", shipped["check"])
    size = {
        "text_dominated": sum(r.label == TEXT for r in rows),
        "natural": sum(r.label != TEXT for r in rows),
    }
    path = write_result(
        "text_spotting",
        {
            "seed": args.seed,
            "images": size,
            "targets": {"text_drop": TARGET_DROP, "natural_keep": TARGET_KEEP},
        }
        | {"shipped_recipe": shipped, "detectors": results},
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
