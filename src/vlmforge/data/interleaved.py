"""Interleaved image-text documents (seed §3.1.3; the OBELICS layout, Laurençon et al. 2023): a document
is an ordered list of nodes, each a paragraph of text or an image, stored as parallel ``texts`` and
``images`` lists where exactly one of the two is set at each position.

On disk: WebDataset tar shards, one document per key: ``<key>.json`` holds ``texts``, ``images`` (the
member suffix of each image, e.g. ``"1.png"`` for ``<key>.1.png``, else null), ``image_meta`` (per image:
e.g. the similarity of an MMC4-style assignment) and ``meta``; the images follow as ``<key>.<i>.<ext>``.
Shards are written reproducibly to the byte (fixed member order, mtime, owner and mode)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: key = path up to the first dot


@dataclass
class Picture:
    """One image node: its encoded bytes, file extension and metadata (e.g. an assignment similarity)."""

    data: bytes
    ext: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    """Parallel node lists: ``texts[i]`` is a paragraph or None, ``images[i]`` a Picture or None."""

    key: str
    texts: list[str | None]
    images: list[Picture | None]
    meta: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # a read-time reason (bad JSON, missing image...), "" when readable

    @property
    def paragraphs(self) -> list[str]:
        return [t for t in self.texts if t is not None]

    @property
    def pictures(self) -> list[Picture]:
        return [p for p in self.images if p is not None]

    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


def document_json(doc: Document) -> dict[str, Any]:
    names = [None if p is None else f"{i}.{p.ext}" for i, p in enumerate(doc.images)]
    return {
        "key": doc.key,
        "texts": doc.texts,
        "images": names,
        "image_meta": [None if p is None else p.meta for p in doc.images],
        "meta": doc.meta,
    }


def write_documents(path: Path, documents: list[Document]) -> str:
    """A tar of ``key.json`` + ``key.<i>.<ext>`` per document, reproducible to the byte; returns its
    SHA-256. Written to a temporary name and renamed, so a present file is always complete."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for doc in documents:
            body = json.dumps(document_json(doc), sort_keys=True, ensure_ascii=False).encode("utf-8")
            members = [(f"{doc.key}.json", body)]
            members += [(f"{doc.key}.{i}.{p.ext}", p.data) for i, p in enumerate(doc.images) if p is not None]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_documents(path: Path) -> Iterator[Document]:
    """Every document of a shard in order. An unreadable one is yielded with ``error`` set (bad_json,
    bad_layout, missing_image, unsafe_path), never skipped; a shard cut short ends with a ``truncated``
    document."""
    group: dict[str, bytes] = {}
    current: str | None = None
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    yield Document(member.name, [], [], error="unsafe_path")
                    continue
                match = _KEY_EXT.match(member.name)
                key, ext = (match.group(1), match.group(2)) if match else (member.name, "")
                if key != current and current is not None:
                    yield assemble(current, group)
                    group = {}
                current = key
                handle = tar.extractfile(member)
                group[ext] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError):
        yield Document(current or f"{path.name}:end", [], [], error="truncated")
        return
    if current is not None:
        yield assemble(current, group)


def assemble(key: str, members: dict[str, bytes]) -> Document:
    """The document of one key from its members (``json`` and the image suffixes it names)."""
    try:
        body = json.loads(members["json"].decode("utf-8"))
        texts, names = body["texts"], body["images"]
        metas = body.get("image_meta") or [None] * len(names)
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return Document(key, [], [], error="bad_json")
    if not (isinstance(texts, list) and isinstance(names, list) and len(texts) == len(names) == len(metas)):
        return Document(key, [], [], error="bad_layout")
    if any(
        (t is None) == (n is None) or not isinstance(t or n, str) for t, n in zip(texts, names, strict=True)
    ):
        return Document(key, [], [], error="bad_layout")  # exactly one of text and image per node
    images: list[Picture | None] = []
    for name, meta in zip(names, metas, strict=True):
        if name is None:
            images.append(None)
        elif name not in members:
            return Document(key, [], [], error="missing_image")
        else:
            images.append(Picture(members[name], name.rsplit(".", 1)[-1].lower(), meta or {}))
    return Document(key, list(texts), images, body.get("meta") or {})
