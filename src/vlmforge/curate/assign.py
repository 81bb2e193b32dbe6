"""Retrofitting a text-only corpus with images, as Multimodal C4 interleaves images and text (Zhu et al.
2023; allenai/mmc4 scripts/compute_assignments.py): per document, a maximum-weight bipartite matching
between its sentences and candidate images, CLIP cosine similarities as edge weights, solved with
``scipy.optimize.linear_sum_assignment``. MMC4's candidates are the images of the document's own web
page; here they are the images of a pool most similar to any of the document's sentences. A pair below
``min_similarity`` is not used, and each image goes with at most one sentence of a document.

Each assigned image follows its sentence in the output document; its node keeps the similarity
(``similarity``, MMC4's ``matched_sim``), the sentence index (``matched_text_index``) and its pool name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.curate.sampling import target_image_files
from vlmforge.curate.scorers import Scorer
from vlmforge.data.interleaved import Document, Picture, read_documents, write_documents
from vlmforge.data.shards import resolve_shards
from vlmforge.errors import UserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Pool:
    names: list[str]
    files: list[Path]
    embeddings: np.ndarray  # L2-normalised, one row per image


def sentences(doc: Document) -> list[str]:
    """The document's paragraphs split after ., ! or ? followed by whitespace."""
    return [s.strip() for p in doc.paragraphs for s in _SENTENCE_END.split(p) if s.strip()]


def assign_images(similarity: np.ndarray, min_similarity: float) -> list[tuple[int, int, float]]:
    """(sentence, image, similarity) of the maximum-weight matching of ``similarity`` (sentences x
    images), pairs below ``min_similarity`` left out; in sentence order."""
    from scipy.optimize import linear_sum_assignment

    if not similarity.size:
        return []
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    pairs = [(int(r), int(c), float(similarity[r, c])) for r, c in zip(rows, cols, strict=True)]
    return sorted(p for p in pairs if p[2] >= min_similarity)


def candidates(similarity: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` pool images (columns) with the highest similarity to any sentence; ties: lower index."""
    best = similarity.max(axis=0)
    return np.argsort(-best, kind="stable")[: min(count, len(best))]


def retrofit(
    doc: Document, sentence_embeddings: np.ndarray, pool: Pool, min_similarity: float, count: int
) -> Document:
    """The document as sentences, each assigned pool image right after its sentence."""
    texts = sentences(doc)
    similarity = sentence_embeddings @ pool.embeddings.T
    chosen = candidates(similarity, count)
    after: dict[int, tuple[int, float]] = {}
    for sentence, column, score in assign_images(similarity[:, chosen], min_similarity):
        after[sentence] = (int(chosen[column]), score)
    nodes_text: list[str | None] = []
    nodes_image: list[Picture | None] = []
    for i, text in enumerate(texts):
        nodes_text.append(text)
        nodes_image.append(None)
        if i in after:
            image, score = after[i]
            file = pool.files[image]
            meta = {"image": pool.names[image], "matched_text_index": i, "similarity": round(score, 6)}
            nodes_text.append(None)
            nodes_image.append(Picture(file.read_bytes(), file.suffix.lstrip(".").lower(), meta))
    meta = dict(doc.meta) | {
        "assignment": {"sentences": len(texts), "candidates": len(chosen), "images": len(after)}
    }
    return Document(doc.key, nodes_text, nodes_image, meta)


def embed_pool(folder: Path, scorer: Scorer, batch_size: int = 64) -> Pool:
    """Every image under ``folder`` (recursive, sorted) embedded with the scorer's image tower."""
    from PIL import Image

    files = target_image_files(folder, "--images")
    parts = []
    for start in range(0, len(files), batch_size):
        images = []
        for file in files[start : start + batch_size]:
            try:
                with Image.open(file) as opened:
                    images.append(opened.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"--images: cannot decode {file}: {exc}", hint="remove or replace the file"
                ) from None
        parts.append(scorer.images(images))
    names = [str(f.relative_to(folder)) for f in files]
    return Pool(names, files, np.concatenate(parts).astype(np.float32))


def retrofit_corpus(
    patterns: list[str], images: Path, output: Path, scorer: Scorer, min_similarity: float, count: int
) -> dict[str, Any]:
    """Every document of the shards ``patterns`` name, retrofitted from the image folder ``images``,
    written to ``output``/shards (one shard per input shard) with a summary in ``output``/assign.json."""
    shards = resolve_shards(patterns, "input")
    pool = embed_pool(images, scorer)
    summary: dict[str, Any] = {
        "documents": 0,
        "unreadable": {},
        "images": 0,
        "pool": len(pool.names),
        "shards": [],
    }
    for index, shard in enumerate(shards):
        done = []
        for doc in read_documents(shard):
            if doc.error:
                summary["unreadable"][doc.key] = doc.error
                continue
            texts = sentences(doc)
            embedded = scorer.texts(texts) if texts else np.zeros((0, pool.embeddings.shape[1]), np.float32)
            done.append(retrofit(doc, embedded, pool, min_similarity, count))
        path = output / "shards" / f"{index:05d}.tar"
        summary["shards"].append(
            {"input": str(shard), "documents": len(done), "sha256": write_documents(path, done)}
        )
        summary["documents"] += len(done)
        summary["images"] += sum(len(d.pictures) for d in done)
    (output / "assign.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
