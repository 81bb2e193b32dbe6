"""FFCV ``.beton`` files: a fixed-resolution copy of a source for fast training input (``data.kind: ffcv``).

Why FFCV and how it fits: FFCV decodes JPEGs in compiled, multi-threaded pipelines straight into batch
buffers, which pays off when decoding is the bottleneck (high-throughput GPUs on small models). It only
serves fixed-size images, so the writer stores every image already resized and centre-cropped to the
training side, exactly as the other sources preprocess them. Sample order, rank split and mid-epoch
resume stay vlmforge's: the ``GlobalBatchSampler`` decides which samples form each micro-batch, and FFCV's
loader is given that order (``OrderOption.SEQUENTIAL`` over explicit indices), so an FFCV run sees the
same samples in the same steps as any other source. Captions are chosen and tokenized in the training
process, as for every source.

A written dataset is two files: ``NAME.beton`` (images + per-sample JSON: key, captions, label) and
``NAME.beton.json`` (side, count, class names, prompts), written last so that its presence means complete.

FFCV is an optional extra (``pip install 'vlmforge[ffcv]'``) that builds against system libraries:
``apt-get install libturbojpeg0-dev libopencv-dev pkg-config`` first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmforge.data.base import DEFAULT_PROMPTS, ImageTextSet, fingerprint_bytes
from vlmforge.errors import UserError

CHUNK = 256  # images decoded together when a set is read one image at a time (evaluation, data check)


def require_ffcv(what: str = "data.kind ffcv") -> Any:
    """The ffcv package, or an error saying that ``what`` needs it and how to install it."""
    try:
        import ffcv
    except ImportError:
        raise UserError(
            f"{what} needs the optional package 'ffcv', which is not installed",
            hint="apt-get install libturbojpeg0-dev libopencv-dev pkg-config, "
            "then pip install 'vlmforge[ffcv]'",
        ) from None
    return ffcv


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def to_uint8(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A normalised [3, H, W] tensor back to the [H, W, 3] uint8 pixels it was made from."""
    pixels = image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class _Samples:
    """What FFCV's writer reads: (pixels, metadata) per index; unreadable images are skipped up front."""

    def __init__(self, data: ImageTextSet, readable: list[int], mean: tuple, std: tuple) -> None:
        self.data, self.readable, self.mean, self.std = data, readable, mean, std

    def __len__(self) -> int:
        return len(self.readable)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        index = self.readable[int(i)]
        label = self.data.label(index)
        meta = {"key": self.data.key(index), "captions": self.data.captions_of(index), "label": label}
        return to_uint8(self.data.image(index), self.mean, self.std), meta


def write_beton(
    data: ImageTextSet,
    path: Path,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    jpeg_quality: int = 90,
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``data`` (its images already at the training side) to ``path``; returns the sidecar contents.

    Images that cannot be read are left out and listed under ``dropped`` (with the reason); the files
    appear only once complete (written under temporary names, then renamed)."""
    require_ffcv()
    from ffcv.fields import JSONField, RGBImageField
    from ffcv.writer import DatasetWriter

    from vlmforge.data.accounting import BadSample

    readable, dropped, side = [], [], None
    for i in range(len(data)):
        try:
            side = side or int(data.image(i).shape[-1])
            readable.append(i)
        except BadSample as bad:
            dropped.append(bad.drop.to_json())
    if side is None:
        raise UserError(f"data {data.name!r}: no readable image to write", hint="run `vlmforge data check`")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fields = {
        "image": RGBImageField(write_mode="jpg", max_resolution=side, jpeg_quality=jpeg_quality),
        "meta": JSONField(),
    }
    DatasetWriter(str(partial), fields, num_workers=workers).from_indexed_dataset(
        _Samples(data, readable, mean, std)
    )
    info = {
        "side": side,
        "count": len(readable),
        "classnames": data.classnames,
        "prompts": list(data.prompts),
        "source": data.name,
        "source_fingerprint": data.fingerprint,
        "dropped": dropped,
    }
    os.replace(partial, path)
    info_partial = sidecar(path).with_name(f".{sidecar(path).name}.partial")
    info_partial.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    os.replace(info_partial, sidecar(path))
    return info


def read_info(path: Path) -> dict[str, Any]:
    if not path.is_file() or not sidecar(path).is_file():
        missing = path if not path.is_file() else sidecar(path)
        raise UserError(
            f"data.path: {missing} does not exist",
            hint="write one with `vlmforge curate -c RECIPE --write ffcv` "
            "(it writes NAME.beton and NAME.beton.json)",
        )
    return json.loads(sidecar(path).read_text(encoding="utf-8"))


def image_pipeline(mean: tuple, std: tuple) -> list[Any]:
    """Decode -> normalise (on uint8 HWC, as FFCV does it) -> float [B, 3, H, W] tensor."""
    from ffcv.fields.decoders import SimpleRGBImageDecoder
    from ffcv.transforms import NormalizeImage, ToTensor, ToTorchImage

    scale = np.float32(255)
    return [
        SimpleRGBImageDecoder(),
        NormalizeImage(np.asarray(mean) * scale, np.asarray(std) * scale, np.float32),
        ToTensor(),
        ToTorchImage(channels_last=False),
    ]


def open_loader(path: Path, indices: list[int], batch: int, workers: int, pipelines: dict[str, Any]) -> Any:
    from ffcv.loader import Loader, OrderOption

    return Loader(
        str(path),
        batch_size=batch,
        num_workers=max(1, workers),
        order=OrderOption.SEQUENTIAL,  # the given order: vlmforge's sampler already shuffled it
        indices=indices,
        drop_last=False,
        pipelines=pipelines,
    )


class BetonImages:
    """``load_image`` of an FFCV source for one-at-a-time readers (evaluation, data check): decodes
    ``CHUNK`` consecutive samples at once and keeps the last chunk (readers walk sets in order)."""

    def __init__(self, path: Path, count: int, mean: tuple, std: tuple) -> None:
        self.path, self.count, self.mean, self.std = path, count, mean, std
        self._start, self._images = -1, torch.empty(0)

    def __call__(self, i: int) -> torch.Tensor:
        if not self._start <= i < self._start + len(self._images):
            self._start = i
            chosen = list(range(i, min(i + CHUNK, self.count)))
            loader = open_loader(
                self.path, chosen, CHUNK, 1, {"image": image_pipeline(self.mean, self.std), "meta": None}
            )
            self._images = torch.cat([images for (images,) in loader])
        return self._images[i - self._start]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers start with an empty chunk
        return {**self.__dict__, "_start": -1, "_images": torch.empty(0)}


def ffcv_set(cfg: Any) -> ImageTextSet:
    """``data.kind: ffcv``: the samples of a ``.beton`` written by vlmforge, metadata read up front."""
    require_ffcv()
    from ffcv.fields import JSONField

    info = read_info(cfg.path)
    if info["side"] != cfg.image_size:
        raise UserError(
            f"data.path {cfg.path} holds {info['side']} px images but data.image_size is {cfg.image_size}",
            hint=f"set data.image_size={info['side']} (FFCV datasets have one fixed resolution)",
        )
    every = list(range(info["count"]))
    meta = [
        entry
        for (raw,) in open_loader(cfg.path, every, CHUNK, cfg.num_workers, {"image": None})
        for entry in JSONField.unpack(raw)
    ]
    labels = [m["label"] for m in meta]
    return ImageTextSet(
        name=cfg.path.stem,
        keys=[m["key"] for m in meta],
        captions=[m["captions"] for m in meta],
        load_image=BetonImages(cfg.path, info["count"], cfg.mean, cfg.std),
        labels=None if any(label is None for label in labels) else np.asarray(labels, dtype=np.int64),
        classnames=cfg.classnames or info["classnames"],
        prompts=info["prompts"] or DEFAULT_PROMPTS,
        fingerprint=fingerprint_bytes(str(info["source_fingerprint"]).encode(), str(info["count"]).encode()),
    )


class FfcvBatches:
    """The training loader of an FFCV source: the sampler's micro-batches, images decoded by FFCV, every
    other field (caption, tokens, hard negatives...) from the training dataset as for any source."""

    def __init__(
        self,
        dataset: Any,  # CaptionedImages, or a family's wrapper of it (``.base``)
        sampler: Any,  # GlobalBatchSampler
        path: Path,
        workers: int,
        normalise: tuple[tuple, tuple],  # (mean, std)
        current_epoch: Callable[[], int],
    ) -> None:
        self.dataset, self.sampler, self.path, self.workers = dataset, sampler, path, workers
        self.normalise, self.current_epoch = normalise, current_epoch
        self.captioned = getattr(dataset, "base", dataset)
        self.captioned.with_images = False  # FFCV decodes them, batched

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from vlmforge.data.loader import collate

        self.sampler.set_epoch(self.current_epoch())
        batches = list(self.sampler)
        if not batches:
            return
        indices = self.captioned.data.indices  # the training split's positions in the file
        order = [int(indices[index]) for batch in batches for _, _, index in batch]
        pipelines = {"image": image_pipeline(*self.normalise), "meta": None}
        images = iter(open_loader(self.path, order, len(batches[0]), self.workers, pipelines))
        for batch in batches:
            (pixels,) = next(images)
            out = collate([self.dataset[key] for key in batch])
            out["image"] = pixels
            yield out
