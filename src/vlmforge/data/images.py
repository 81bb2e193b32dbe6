"""Image decoding and the square transform shared by the file-based sources.

A failure is classified into an accounting reason (``truncated`` or ``decode_error``) instead of
escaping as a PIL exception, so loaders can count it and go on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch


class ImageError(Exception):
    """A decode failure with its accounting reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode_rgb(data: bytes | Path, min_side: int = 1) -> Any:
    """Fully decoded RGB PIL image; raises ImageError(truncated | decode_error | too_small)."""
    from PIL import Image, UnidentifiedImageError

    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(stream) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
    except Image.DecompressionBombError as exc:  # above twice PIL's MAX_IMAGE_PIXELS
        raise ImageError("decode_error", f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("decode_error", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's ways of saying "bad file"
        text = str(exc) or type(exc).__name__
        reason = "truncated" if "truncat" in text.lower() else "decode_error"
        raise ImageError(reason, text) from None
    if min(rgb.size) < min_side:
        raise ImageError("too_small", f"{rgb.width}x{rgb.height} is below min_image_size={min_side}")
    return rgb


def square_tensor(img: Any, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Resize the short side to ``size`` (bicubic), centre-crop, normalise -> [3, size, size] float.

    The arithmetic is torchvision's ``Resize(size)`` + ``CenterCrop(size)`` (long side truncated, crop offset
    rounded half to even), the transform open_clip and timm rebuild from an export: the pixels a model
    trained on are the pixels it sees there."""
    from PIL import Image

    short, long = min(img.size), max(img.size)
    new_long = int(size * long / short)
    w, h = (new_long, size) if img.width >= img.height else (size, new_long)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = round((w - size) / 2), round((h - size) / 2)
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img, dtype=np.float32) / 255.0
    return (torch.from_numpy(array).permute(2, 0, 1) - mean) / std
