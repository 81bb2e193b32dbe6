"""Text detection for T-MARS-like masking and text spotting. Detectors map an RGB image to text boxes
(x0, y0, x1, y1) in pixels; ``DETECTORS`` maps the recipe's ``detector.kind`` to a builder. The OCR
detector (EasyOCR: CRAFT, Baek et al. 2019, + a CRNN recogniser) also reads the words in each box.

The OCR reader itself lives in ``vlmforge.ocr`` (LLaVA prompts read words with it too).

MSER: maximally stable extremal regions (Matas et al. 2002) as character candidates, kept when their
stroke width is near-constant (distance transform along the stroke ridge, as in the stroke width
transform of Epshtein et al. 2010), then chained into lines of similar height, baseline and stroke;
a line counts as text when its regions sit on one straight (possibly slanted) baseline with thin strokes,
which textures (grass, gravel, brick) rarely do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vlmforge.config.curate_models import EastDetector, MserDetector, OcrDetector
from vlmforge.errors import UserError
from vlmforge.ocr import OcrReader

Box = tuple[int, int, int, int]
Detector = Callable[[np.ndarray], list[Box]]


def _characters(gray: np.ndarray) -> np.ndarray:
    """Character candidates as rows (x, y, w, h, stroke width)."""
    import cv2

    height, width = gray.shape
    mser = cv2.MSER_create(5, 5, int(0.05 * height * width), 0.5, 0.0)  # min_diversity 0: keep thin glyphs
    regions, boxes = mser.detectRegions(gray)
    found: dict[tuple[int, int, int, int], float] = {}
    ring = np.ones((3, 3), np.uint8)
    for points, (x, y, w, h) in zip(regions, boxes, strict=True):
        if h < 5 or h > 0.3 * height or w > 1.5 * h or w < 0.1 * h:
            continue
        if not 0.2 <= len(points) / float(w * h) <= 0.9:
            continue
        mask = np.zeros((h + 2, w + 2), np.uint8)
        mask[points[:, 1] - y + 1, points[:, 0] - x + 1] = 1
        distance = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        stroke = distance[(distance > 0) & (distance >= cv2.dilate(distance, ring))]
        if stroke.size == 0 or stroke.std() > 0.5 * stroke.mean() or stroke.mean() > 0.2 * h:
            continue
        found[(int(x), int(y), int(w), int(h))] = float(stroke.mean())
    return np.array([(*box, sw) for box, sw in found.items()], dtype=np.float64).reshape(-1, 5)


def _lines(chars: np.ndarray, min_chars: int) -> list[Box]:
    """Chain characters of similar height, centre line and stroke width that sit close in x."""
    n = len(chars)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    x, y, w, h, sw = chars.T if n else (np.zeros(0),) * 5
    centre = y + h / 2
    for i in range(n):
        taller = np.maximum(h[i], h)
        gap = np.maximum(x - (x[i] + w[i]), x[i] - (x + w))
        near = (taller / np.minimum(h[i], h) < 1.5) & (np.abs(centre[i] - centre) < 0.3 * taller)
        near &= (gap < taller) & (np.maximum(sw[i], sw) / np.minimum(sw[i], sw) < 2.0)
        for j in np.nonzero(near)[0]:
            if j > i:
                parent[root(i)] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    lines = []
    for members in groups.values():
        b = chars[members]
        x0, y0 = b[:, 0].min(), b[:, 1].min()
        x1, y1 = (b[:, 0] + b[:, 2]).max(), (b[:, 1] + b[:, 3]).max()
        if x1 - x0 >= 2 * np.median(b[:, 3]) and len(side_by_side(b)) >= min_chars and is_text_line(b):
            lines.append((int(x0), int(y0), int(x1), int(y1)))
    return sorted(lines)


def baseline_residuals(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tops and bottoms of character boxes (rows x, y, w, h, ...) measured from the least-squares line
    through their bottoms against their centres: a straight, possibly slanted, baseline."""
    centre, top, bottom = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1], boxes[:, 1] + boxes[:, 3]
    slope, offset = np.polyfit(centre, bottom, 1) if np.ptp(centre) > 0 else (0.0, float(np.median(bottom)))
    fitted = slope * centre + offset
    return top - fitted, bottom - fitted


def is_text_line(
    regions: np.ndarray, max_height: float = 2.2, max_baseline_spread: float = 0.08, max_stroke: float = 0.5
) -> bool:
    """Character regions (rows x, y, w, h, stroke half-width) of a printed line sit on one straight
    baseline, as in the line verification of Neumann and Matas 2010 ("A method for text localization and
    recognition in real-world images"): the bottoms' median distance from the fitted baseline is under
    ``max_baseline_spread`` of the typical height, and the line, measured across its baseline, is under
    ``max_height`` typical heights. Their strokes are thin (Epshtein et al. 2010): the median stroke is
    under ``max_stroke`` of the region's width, which solid blobs (bricks, pebbles) exceed."""
    typical = float(np.median(regions[:, 3]))
    tops, bottoms = baseline_residuals(regions)
    spread = float(np.median(np.abs(bottoms - np.median(bottoms))))
    stroke = float(np.median(2 * regions[:, 4] / regions[:, 2]))
    straight = bottoms.max() - tops.min() <= max_height * typical and spread <= max_baseline_spread * typical
    return bool(straight and stroke <= max_stroke)


def side_by_side(boxes: np.ndarray) -> np.ndarray:
    """One box per character, left to right: nested MSER regions of one glyph (boxes overlapping the
    previous one by more than a fifth of their width) are folded into the first."""
    kept, right = [], -np.inf
    for row in boxes[np.argsort(boxes[:, 0], kind="stable")]:
        if row[0] >= right - 0.2 * row[2]:
            kept.append(row)
            right = row[0] + row[2]
        else:
            right = max(right, row[0] + row[2])
    return np.array(kept).reshape(-1, boxes.shape[1])


def mser_detector(cfg: MserDetector) -> Detector:
    def detect(rgb: np.ndarray) -> list[Box]:
        import cv2

        scale = min(1.0, cfg.max_side / max(rgb.shape[:2]))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = _lines(_characters(gray), cfg.min_chars)
        return [tuple(round(v / scale) for v in box) for box in boxes]  # type: ignore[misc]

    return detect


def check_east(cfg: EastDetector) -> None:
    if not cfg.model.is_file():
        raise UserError(
            f"detector.model: EAST model file not found: {cfg.model}",
            hint="download frozen_east_text_detection.pb, or use detector: {kind: mser}",
        )


def east_detector(cfg: EastDetector) -> Detector:
    """OpenCV's EAST text detector (Zhou et al. 2017) from a local frozen graph."""
    import cv2

    check_east(cfg)
    model = cv2.dnn_TextDetectionModel_EAST(str(cfg.model))
    model.setConfidenceThreshold(cfg.confidence)
    model.setNMSThreshold(cfg.nms)
    model.setInputParams(1.0, (cfg.input_size, cfg.input_size), (123.68, 116.78, 103.94), True)

    def detect(rgb: np.ndarray) -> list[Box]:
        quads, _ = model.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        boxes = []
        for quad in quads:
            pts = np.asarray(quad).reshape(-1, 2)
            x0, y0 = np.clip(pts.min(axis=0), 0, None)
            x1, y1 = pts.max(axis=0)
            boxes.append((int(x0), int(y0), int(min(x1, rgb.shape[1])), int(min(y1, rgb.shape[0]))))
        return sorted(boxes)

    return detect


def ocr_detector(cfg: OcrDetector) -> OcrReader:
    return OcrReader(cfg)


DETECTORS: dict[str, Callable[[Any], Detector]] = {
    "mser": mser_detector,
    "east": east_detector,
    "ocr": ocr_detector,
}


def build_detector(cfg: Any) -> Detector:
    return DETECTORS[cfg.kind](cfg)


def text_area(boxes: list[Box], width: int, height: int) -> float:
    """Fraction of the image covered by the union of the boxes."""
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    return float(covered.mean()) if covered.size else 0.0


def mask_text(image: Any, boxes: list[Box]) -> Any:
    """T-MARS masking: each text box filled with the mean colour of a thin ring around it."""
    from PIL import Image

    if not boxes:
        return image
    pixels = np.array(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    for x0, y0, x1, y1 in boxes:
        ox0, oy0, ox1, oy1 = max(x0 - 2, 0), max(y0 - 2, 0), min(x1 + 2, width), min(y1 + 2, height)
        outer = pixels[oy0:oy1, ox0:ox1].reshape(-1, 3).astype(np.float64)
        inner = pixels[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64)
        ring_count = len(outer) - len(inner)
        fill = (outer.sum(0) - inner.sum(0)) / ring_count if ring_count > 0 else outer.mean(0)
        pixels[y0:y1, x0:x1] = np.round(fill).astype(np.uint8)
    return Image.fromarray(pixels)
