"""Reading input shards (tar in img2dataset layout, or a folder + captions file) and writing output shards
byte-for-byte reproducibly (fixed member order, mtime, owner and mode)."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.curate import CurateInput, FolderInput
from vlmforge.curate.batch import Chunk, Sample
from vlmforge.data.captions import CaptionRow, image_file, read_caption_rows
from vlmforge.data.shards import CAPTION_EXT, cut_drop, resolve_shards
from vlmforge.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: key = path up to the first dot


@dataclass(frozen=True)
class ShardRef:
    """One unit of work: a tar file, or rows [start, stop) of a folder's captions file."""

    index: int
    path: str
    start: int = 0
    stop: int = 0

    @property
    def label(self) -> str:
        return self.path if self.stop == 0 else f"{self.path}[{self.start}:{self.stop}]"


def list_shards(cfg: CurateInput) -> list[ShardRef]:
    """The input shards in order; missing files are an error naming them."""
    if isinstance(cfg, FolderInput):
        if not cfg.path.is_dir():
            raise UserError(f"input.path: folder not found: {cfg.path}", hint="point it at the image folder")
        rows = len(_caption_rows(cfg.path / cfg.captions))
        step = cfg.samples_per_shard
        return [
            ShardRef(i, str(cfg.path), start, min(start + step, rows))
            for i, start in enumerate(range(0, rows, step))
        ]
    return [ShardRef(i, str(path)) for i, path in enumerate(resolve_shards(cfg.shards, "input.shards"))]


def input_fingerprint(shards: list[ShardRef]) -> str:
    """Shard paths, row ranges and file sizes: a changed input is not mistaken for the one resumed."""
    digest = hashlib.sha256()
    for ref in shards:
        size = os.path.getsize(ref.path) if os.path.isfile(ref.path) else 0
        digest.update(f"{ref.label}\t{size}\n".encode())
    return digest.hexdigest()


def read_samples(ref: ShardRef, cfg: CurateInput) -> tuple[list[Sample], str]:
    """Every sample of a shard in order, and a shard-level error ("" if none; e.g. a truncated tar:
    the samples before the damage are returned, and the sample the cut lost is counted)."""
    if isinstance(cfg, FolderInput):
        return _folder_samples(ref, cfg), ""
    samples: list[Sample] = []
    group: dict[str, bytes] = {}  # the current key's members read whole
    seen: list[str] = []  # the current key's members whose header was read
    current: str | None = None
    opened = False
    try:
        with tarfile.open(ref.path, mode="r|*") as tar:
            opened = True
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                if name.startswith("/") or ".." in Path(name).parts:
                    samples.append(Sample(name, None, "", None, {}, error="unsafe_path"))
                    continue
                match = _KEY_EXT.match(name)
                key, ext = (match.group(1), match.group(2).lower()) if match else (name, "")
                if key != current and current is not None:
                    samples.append(_assemble(current, group))
                    group, seen = {}, []
                current = key
                seen.append(ext)
                handle = tar.extractfile(member)
                group[ext] = handle.read() if handle is not None else b""
            if current is not None:
                samples.append(_assemble(current, group))
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if not opened:  # not a tar at all: no sample to count
            return [], error
        return samples + _cut_samples(ref.path, current, group, seen, error), error
    return samples, ""


def _cut_samples(
    path: str, key: str | None, group: dict[str, bytes], seen: list[str], error: str
) -> list[Sample]:
    """What a tar cut short still counts, as ``vlmforge data check`` counts it (``cut_drop``): the sample
    the cut fell in (``truncated``), or, when the cut came after the last sample's image and caption
    headers, that sample (kept if both were read whole) and a ``truncated`` placeholder after it."""
    lost = cut_drop(path, key, seen, error).key
    cut = Sample(lost, None, "", None, {}, error="truncated")
    if key is None or lost == key:
        return [cut]
    whole = CAPTION_EXT in group and any(e in group for e in IMAGE_EXTS)
    last = _assemble(key, group) if whole else Sample(key, None, "", None, {}, error="truncated")
    return [last, cut]


def _assemble(key: str, fields: dict[str, bytes]) -> Sample:
    ext = next((e for e in IMAGE_EXTS if e in fields), "")
    meta: dict[str, Any] = {}
    error = ""
    if "json" in fields:
        try:
            loaded = json.loads(fields["json"].decode("utf-8"))
            meta = loaded if isinstance(loaded, dict) else {"value": loaded}
        except (UnicodeDecodeError, json.JSONDecodeError):
            error = "bad_json"
    caption = None
    if "txt" in fields:
        try:
            caption = fields["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            error = error or "caption_not_utf8"
    if not ext:
        error = "missing_image"
    elif caption is None and not error:
        error = "missing_caption"
    return Sample(key, fields.get(ext), ext, caption, meta, error)


def _caption_rows(path: Path) -> list[CaptionRow]:
    """The captions file, parsed once per process (and version of the file) however many shards it has."""
    stat = path.stat() if path.is_file() else None
    return _parsed_rows(str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)


@functools.lru_cache(maxsize=2)
def _parsed_rows(path: str, mtime_ns: int, size: int) -> list[CaptionRow]:
    return read_caption_rows(Path(path))


def _folder_samples(ref: ShardRef, cfg: FolderInput) -> list[Sample]:
    """Rows [start, stop) of the captions file as samples; a line that is not UTF-8 and a path leading
    outside the folder (unless ``allow_outside``) are counted, and such a file is never opened."""
    rows = _caption_rows(cfg.path / cfg.captions)[ref.start : ref.stop]
    samples = []
    for row in rows:
        if row.drop is not None:
            samples.append(Sample(row.drop.key, None, "", None, {}, error="caption_not_utf8"))
            continue
        key, _, ext = row.image.rpartition(".")
        meta = dict(row.extra)
        file, refused = image_file(cfg.path, row.image, cfg.allow_outside)
        if refused:
            samples.append(Sample(row.image, None, "", None, meta, error="unsafe_path"))
            continue
        data = file.read_bytes() if file.is_file() else None
        error = "" if data is not None else "missing_image"
        samples.append(Sample(key or row.image, data, ext.lower(), row.caption.strip(), meta, error))
    return samples


def decode(samples: list[Sample]) -> tuple[Chunk, np.ndarray]:
    """Decode every image fully (so truncation is caught); returns the chunk and a read reason per row."""
    from PIL import Image, UnidentifiedImageError

    images, reasons = [], []
    width = np.zeros(len(samples), dtype=np.int64)
    height = np.zeros(len(samples), dtype=np.int64)
    for i, sample in enumerate(samples):
        image, reason = None, sample.error
        if not reason:
            try:
                with Image.open(io.BytesIO(sample.image or b"")) as opened:
                    opened.load()
                    image = opened.convert("RGB")
                width[i], height[i] = image.size
            except Image.DecompressionBombError:
                reason = "too_many_pixels"
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                reason = "truncated_image" if "truncated" in str(exc).lower() else "decode_error"
        images.append(image)
        reasons.append(reason)
    chunk = Chunk(
        keys=[s.key for s in samples],
        captions=[s.caption or "" for s in samples],
        images=images,
        raw=[s.image or b"" for s in samples],
        width=width,
        height=height,
        nbytes=np.array([len(s.image or b"") for s in samples], dtype=np.int64),
    )
    return chunk, np.array(reasons, dtype=object)


# ------------------------------------------------------------------------------------------ writing
@dataclass
class OutputSample:
    key: str
    ext: str
    image: bytes
    caption: str
    meta: dict[str, Any]


def write_shard(path: Path, samples: list[OutputSample]) -> str:
    """A tar of key.<ext> + key.txt + key.json per sample, reproducible to the byte; returns its SHA-256.
    Written to a temporary name and renamed, so a present file is always complete."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for sample in samples:
            meta = json.dumps(sample.meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
            members = [(sample.ext, sample.image), ("txt", sample.caption.encode("utf-8")), ("json", meta)]
            for ext, data in members:
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()
