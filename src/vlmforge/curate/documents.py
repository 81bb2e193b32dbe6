"""Document-level curation of interleaved image-text documents, as OBELICS does it (Laurençon et al.
2023, §3): image filters (size, aspect ratio, logos = images in many documents, repeats of an image an
earlier kept document has), paragraph filters and document filters (ROOTS text measures), then exact
and near (MinHash) dedup of the documents' text.

Documents are decided one by one in input order, so "earlier" is well defined. Every document is
accounted for (kept, or dropped by a stage with a reason), and so is every image and paragraph (kept,
removed with a reason, or gone with its dropped document)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.config.interleaved import DocumentCuration, ImageFilters
from vlmforge.curate.dedup import phash
from vlmforge.curate.minhash import LshIndex, permutations, shingles, signature
from vlmforge.curate.report import check_accounting
from vlmforge.curate.textstats import text_reason, text_words
from vlmforge.data.interleaved import Document, Picture, read_documents, write_documents
from vlmforge.data.shards import resolve_shards

STAGES = ("read", "document_filters", "exact_dedup", "near_dedup")


@dataclass
class MeasuredImage:
    sha256: str
    phash: np.ndarray | None  # None when undecodable
    width: int
    height: int


@dataclass
class Seen:
    """What the kept documents so far hold: image hashes, text hashes, MinHash signatures."""

    images: set[str] = field(default_factory=set)
    phashes: list[np.ndarray] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)
    lsh: LshIndex | None = None


def measure_image(picture: Picture) -> MeasuredImage:
    from PIL import Image

    digest = hashlib.sha256(picture.data).hexdigest()
    try:
        with Image.open(io.BytesIO(picture.data)) as opened:
            opened.load()
            image = opened.convert("RGB")
    except Exception:  # any undecodable image is removed with decode_error
        return MeasuredImage(digest, None, 0, 0)
    return MeasuredImage(digest, phash(image), image.width, image.height)


def image_reason(m: MeasuredImage, cfg: ImageFilters, uses: Counter[str], seen: Seen) -> str:
    """The first image filter ``m`` fails ("" if none)."""
    if m.phash is None:
        return "decode_error"
    short, long = min(m.width, m.height), max(m.width, m.height)
    if short < cfg.min_side:
        return "image_too_small"
    if long > cfg.max_side:
        return "image_too_large"
    if long / short > cfg.max_aspect_ratio:
        return "aspect_ratio"
    if uses[m.sha256] > cfg.max_documents:
        return "repeated_image"
    if m.sha256 in seen.images or _near_seen(m.phash, seen.phashes, cfg.near_duplicate_bits):
        return "duplicate_image"
    return ""


def _near_seen(code: np.ndarray, seen: list[np.ndarray], bits: int) -> bool:
    if bits < 0 or not seen:
        return False
    return bool((np.unpackbits(np.stack(seen) ^ code, axis=1).sum(axis=1) <= bits).any())


def normalised_text(doc: Document) -> str:
    return " ".join(text_words(doc.text()))


@dataclass
class Outcome:
    key: str
    source: str
    stage: str = ""  # the stage that dropped the document ("" if kept)
    reason: str = ""
    removed: list[tuple[int, str, str]] = field(default_factory=list)  # (node, image|text, reason)
    nodes_in: Counter[str] = field(default_factory=Counter)  # images and paragraphs read
    document: Document | None = None  # what is left of it, when kept


def decide_document(
    doc: Document, source: str, cfg: DocumentCuration, uses: Counter[str], seen: Seen, perms: Any
) -> Outcome:
    """Filter one document's nodes, then the document, then dedup it against the kept ones."""
    outcome = Outcome(doc.key, source)
    if doc.error:
        outcome.stage, outcome.reason = "read", doc.error
        return outcome
    outcome.nodes_in.update(image=len(doc.pictures), text=len(doc.paragraphs))
    texts, images, measured = list(doc.texts), list(doc.images), []
    for i, (text, picture) in enumerate(zip(doc.texts, doc.images, strict=True)):
        if picture is not None:
            m = measure_image(picture)
            why = image_reason(m, cfg.images, uses, seen)
            if why:
                outcome.removed.append((i, "image", why))
                images[i] = None
            else:
                measured.append(m)
        elif text is not None:
            why = text_reason(text, cfg.paragraphs)
            if why:
                outcome.removed.append((i, "text", f"paragraph_{why}"))
                texts[i] = None
    keep = [i for i in range(len(texts)) if texts[i] is not None or images[i] is not None]
    left = Document(doc.key, [texts[i] for i in keep], [images[i] for i in keep], doc.meta)
    outcome.stage, outcome.reason = "document_filters", _document_reason(left, cfg)
    if not outcome.reason:
        text = normalised_text(left)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        sig = signature(shingles(text.split()), *perms)
        assert seen.lsh is not None
        if digest in seen.texts:
            outcome.stage, outcome.reason = "exact_dedup", "duplicate_document"
        elif seen.lsh.best_match(sig)[1] >= cfg.near_duplicate_jaccard:
            outcome.stage, outcome.reason = "near_dedup", "near_duplicate_document"
        else:
            outcome.stage, outcome.document = "", left
            seen.texts.add(digest)
            seen.lsh.add(sig)
            seen.images.update(m.sha256 for m in measured)
            seen.phashes.extend(m.phash for m in measured if m.phash is not None)
    return outcome


def _document_reason(doc: Document, cfg: DocumentCuration) -> str:
    count = len(doc.pictures)
    if count < cfg.min_images:
        return "too_few_images"
    if count > cfg.max_images:
        return "too_many_images"
    why = text_reason(doc.text(), cfg.document)
    return f"document_{why}" if why else ""


def image_uses(shards: list[Path]) -> Counter[str]:
    """In how many readable documents each image (by content) appears."""
    uses: Counter[str] = Counter()
    for shard in shards:
        for doc in read_documents(shard):
            uses.update({hashlib.sha256(p.data).hexdigest() for p in doc.pictures})
    return uses


def curate_documents(patterns: list[str], output: Path, cfg: DocumentCuration) -> dict[str, Any]:
    """Curate the interleaved shards ``patterns`` name into ``output``/shards (one output shard per
    input shard); writes report.json, dropped.jsonl (documents) and removed.jsonl (images, paragraphs)."""
    shards = resolve_shards(patterns, "input")
    uses = image_uses(shards)
    seen = Seen(lsh=LshIndex(cfg.minhash_bands))
    perms = permutations(cfg.minhash_permutations, cfg.seed)
    outcomes: list[Outcome] = []
    written = []
    for index, shard in enumerate(shards):
        decided = [decide_document(doc, str(shard), cfg, uses, seen, perms) for doc in read_documents(shard)]
        outcomes += decided
        kept = [o.document for o in decided if o.document is not None]
        path = output / "shards" / f"{index:05d}.tar"
        written.append(
            {
                "input": str(shard),
                "output": str(path.relative_to(output)),
                "documents": len(kept),
                "sha256": write_documents(path, kept),
            }
        )
    report = document_report(outcomes, written)
    (output / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _write_lines(
        output / "dropped.jsonl",
        [
            {"shard": o.source, "key": o.key, "stage": o.stage, "reason": o.reason}
            for o in outcomes
            if o.stage
        ],
    )
    removed = [
        {"key": o.key, "node": n, "kind": kind, "reason": why} for o in outcomes for n, kind, why in o.removed
    ]
    _write_lines(output / "removed.jsonl", removed)
    return report


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def document_report(outcomes: list[Outcome], written: list[dict[str, Any]]) -> dict[str, Any]:
    """Stages in the sample-level report's shape (in = out + dropped, checked) and node accounting."""
    stages, remaining = [], len(outcomes)
    for name in STAGES:
        dropped = Counter(o.reason for o in outcomes if o.stage == name)
        n_out = remaining - sum(dropped.values())
        stages.append({"name": name, "in": remaining, "out": n_out, "dropped": dict(sorted(dropped.items()))})
        remaining = n_out
    kept = sum(o.document is not None for o in outcomes)
    check_accounting(stages, len(outcomes), kept)
    return {
        "total": len(outcomes),
        "kept": kept,
        "dropped": len(outcomes) - kept,
        "stages": stages,
        "images": _node_accounting(outcomes, "image"),
        "paragraphs": _node_accounting(outcomes, "text"),
        "shards": written,
    }


def _node_accounting(outcomes: list[Outcome], kind: str) -> dict[str, Any]:
    """Nodes in, kept, removed by reason, and lost with a dropped document: in = kept + the rest."""
    removed = Counter(why for o in outcomes for _, k, why in o.removed if k == kind)
    total = sum(o.nodes_in[kind] for o in outcomes)
    kept = sum(
        len(o.document.pictures if kind == "image" else o.document.paragraphs)
        for o in outcomes
        if o.document is not None
    )
    lost = sum(
        o.nodes_in[kind] - sum(1 for _, k, _ in o.removed if k == kind)
        for o in outcomes
        if o.document is None
    )
    return {
        "in": total,
        "kept": kept,
        "removed": dict(sorted(removed.items())),
        "with_dropped_document": lost,
    }
