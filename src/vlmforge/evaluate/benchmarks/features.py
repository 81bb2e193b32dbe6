"""Images and captions of a benchmark through a loaded model: image files (optionally cropped to a box)
read with the model's own transform, the unreadable ones dropped and counted (never a crash), and
L2-normalised image and text embeddings computed on the model's device, returned on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.data.accounting import BadSample, Drop
from vlmforge.errors import UserError

Box = tuple[float, float, float, float]  # left, top, width, height in pixels


@dataclass(frozen=True)
class Picture:
    """One image file of a benchmark; ``key`` names it in drops and predictions; ``box``: the region
    evaluated (ARO crops each image to the box of its relation)."""

    path: Path
    key: str
    box: Box | None = None


def read_picture(picture: Picture, benchmark: str, transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """The picture decoded, cropped and transformed; ``BadSample`` when it cannot be used."""
    from vlmforge.data.images import ImageError, decode_rgb

    try:
        image = decode_rgb(picture.path)
    except ImageError as exc:  # also a file that vanished or cannot be opened
        raise BadSample(Drop(benchmark, picture.key, exc.reason, exc.detail)) from None
    if picture.box is not None:
        left, top, width, height = picture.box
        if width < 1 or height < 1:
            raise BadSample(Drop(benchmark, picture.key, "too_small", f"box {width}x{height}"))
        image = image.crop((left, top, left + width, top + height))
    return transform(image)


def picture_batches(
    pictures: Sequence[Picture],
    benchmark: str,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    dropped: list[Drop],
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(positions in ``pictures``, their transformed images) per batch of readable pictures; the unreadable
    ones are appended to ``dropped``."""
    for start in range(0, len(pictures), batch_size):
        positions, images = [], []
        for i in range(start, min(start + batch_size, len(pictures))):
            try:
                images.append(read_picture(pictures[i], benchmark, transform))
                positions.append(i)
            except BadSample as bad:
                dropped.append(bad.drop)
        if images:
            yield positions, torch.stack(images)


@torch.no_grad()
def image_features(
    model: Any, pictures: Sequence[Picture], benchmark: str, batch_size: int
) -> tuple[torch.Tensor, list[int], list[Drop]]:
    """[kept, dim] embeddings of the readable pictures, their positions in ``pictures``, and the drops.
    ``model``: an ``InferenceModel``."""
    feats, kept, dropped = [], [], []
    for positions, images in picture_batches(pictures, benchmark, model.transform, batch_size, dropped):
        feats.append(model.model.encode_image(images.to(model.device), normalize=True).float().cpu())
        kept += positions
    if not feats:
        raise none_readable(benchmark, len(pictures), dropped)
    return torch.cat(feats), kept, dropped


def none_readable(benchmark: str, count: int, dropped: Sequence[Drop]) -> UserError:
    shown = "; ".join(str(d) for d in dropped[:3])
    return UserError(f"{benchmark}: none of the {count} images can be read ({shown})")


def drop_counts(dropped: Sequence[Drop]) -> dict[str, Any]:
    """What a result says of the unreadable images: how many, and the first few."""
    if not dropped:
        return {}
    return {"dropped": len(dropped), "dropped_examples": [d.to_json() for d in dropped[:5]]}
