"""Small digits on large canvases, offline: each of sklearn's handwritten digits drawn at ``digit_size``
pixels at a random place on a black ``canvas_size`` canvas, asked "What digit is this?". Read at the
encoder's side, a 48-pixel canvas shrinks an 8-pixel digit to under 3 pixels; read in tiles (anyres), the
digit keeps its pixels. The held-out split is the digits' fixed stratified one."""

from __future__ import annotations

import numpy as np
import torch

from vlmforge.config.schema import DigitCanvases
from vlmforge.data.base import ImageTextSet, fingerprint_bytes
from vlmforge.data.conversation_set import IMAGE, ConversationSet

QUESTIONS = ("What digit is this?", "Which number is written here?", "What number does the image show?")


def render_canvases(digits: np.ndarray, cfg: DigitCanvases) -> tuple[torch.Tensor, np.ndarray]:
    """Canvases [N, 3, canvas_size, canvas_size] in [0, 1] of ``digits`` [N, 8, 8] in [0, 1], each resized
    to ``digit_size`` and pasted at a position drawn from ``cfg.seed``; the positions [N, 2] (row, column)."""
    small = torch.nn.functional.interpolate(
        torch.from_numpy(digits)[:, None], size=(cfg.digit_size, cfg.digit_size), mode="bilinear"
    )
    room = cfg.canvas_size - cfg.digit_size + 1
    places = np.random.default_rng(cfg.seed).integers(0, room, size=(len(digits), 2))
    canvases = torch.zeros(len(digits), cfg.canvas_size, cfg.canvas_size)
    offsets = torch.arange(cfg.digit_size)
    rows = torch.from_numpy(places[:, :1, None]) + offsets[None, :, None]  # [N, d, 1]
    columns = torch.from_numpy(places[:, 1:, None]) + offsets[None, None, :]  # [N, 1, d]
    canvases[torch.arange(len(digits))[:, None, None], rows, columns] = small[:, 0]
    return canvases[:, None].expand(-1, 3, -1, -1), places


def digit_canvases(cfg: DigitCanvases, image_size: int) -> ConversationSet:
    """The 1,797 digits as canvases resized (area) to ``image_size``, normalised, held in memory; captions
    ("a handwritten seven") or questions ("What digit is this?" -> "seven") by ``cfg.task``."""
    from sklearn.datasets import load_digits

    from vlmforge.data.digits import CLASSNAMES

    raw = load_digits()
    canvases, places = render_canvases(raw.images.astype(np.float32) / 16.0, cfg)
    resized = torch.nn.functional.interpolate(canvases, size=(image_size, image_size), mode="area")
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    normalised = ((resized - mean) / std).contiguous()
    labels = raw.target.astype(np.int64)
    names = [CLASSNAMES[int(y)] for y in labels]
    if cfg.task == "caption":
        turns = [[("human", f"{IMAGE}\nDescribe the image."), ("gpt", f"a handwritten {n}")] for n in names]
    else:
        turns = [
            [("human", f"{IMAGE}\n{QUESTIONS[i % len(QUESTIONS)]}"), ("gpt", n)] for i, n in enumerate(names)
        ]
    images = ImageTextSet(
        name=f"digit-canvases-{cfg.task}",
        keys=[f"digit-canvas-{n:04d}" for n in range(len(labels))],
        captions=[[answer for _, answer in conversation[1:]] for conversation in turns],
        load_image=normalised.__getitem__,
        labels=labels,
        classnames=list(CLASSNAMES),
        fingerprint=fingerprint_bytes(raw.images.tobytes(), places.tobytes()),
    )
    return ConversationSet(images, turns, np.ones(len(labels), dtype=bool))
