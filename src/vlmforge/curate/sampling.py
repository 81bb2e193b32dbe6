"""Diversity and balancing (seed §3.1, "Diversity and Balancing"): DataComp image-based sampling and
MetaCLIP balancing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.curate.base import Resources, Step
from vlmforge.curate.batch import Batch, Decision, Table, first_reason
from vlmforge.curate.heuristics import PhraseMatcher, read_vocabulary
from vlmforge.curate.io import IMAGE_EXTS
from vlmforge.curate.scoring import image_embeddings
from vlmforge.errors import UserError


def seeded_uniform(seed: int, *parts: object) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the given ids: independent of order and engine."""
    digest = hashlib.sha256("\0".join(map(str, (seed, *parts))).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def target_image_files(folder: Path, field: str) -> list[Path]:
    """The target set's images under ``folder`` (recursive, sorted); none is an error naming ``field``."""
    hint = f"point it at a folder of target-set images ({', '.join(IMAGE_EXTS)})"
    if not folder.is_dir():
        raise UserError(f"{field}: folder not found: {folder}", hint=hint)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    if not files:
        raise UserError(f"{field}: no images under {folder}", hint=hint)
    return files


class DataCompImageStep(Step):
    """DataComp image-based sampling (Gadre et al. 2023): k-means on the image embeddings of the samples
    reaching this step; each target image picks its nearest centroid; samples in picked clusters stay."""

    kind = "datacomp_image"
    local = False

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"embedding": image_embeddings(batch, self.resources.scorer())}

    def apply(self, table: Table) -> Decision:
        import faiss

        embeddings = np.ascontiguousarray(table["embedding"], dtype=np.float32)
        k = min(self.cfg.clusters, len(table))
        if k == 0:
            return Decision.from_reasons(np.zeros(0, dtype=object))
        kmeans = faiss.Kmeans(
            embeddings.shape[1], k, niter=self.cfg.iterations, seed=table.seed, verbose=False
        )
        kmeans.cp.min_points_per_centroid = 1  # small pools are fine: no warning per call
        kmeans.train(embeddings)
        index = faiss.IndexFlatL2(embeddings.shape[1])
        index.add(kmeans.centroids)
        cluster = index.search(embeddings, 1)[1][:, 0]
        targets = self.target_embeddings()
        chosen = np.unique(index.search(targets, 1)[1][:, 0])
        decision = Decision.from_reasons(
            first_reason(len(table), [(~np.isin(cluster, chosen), "outside_target_clusters")])
        )
        decision.info.update(clusters=k, target_images=len(targets), target_clusters=len(chosen))
        return decision

    def target_embeddings(self) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        files = target_image_files(self.cfg.target_images, f"steps.{self.name}.target_images")
        images = []
        for file in files:
            try:
                with Image.open(file) as opened:
                    images.append(opened.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"steps.{self.name}.target_images: cannot decode {file}: {exc}") from None
        scorer = self.resources.scorer()
        size = self.resources.recipe.batch_size
        return np.concatenate([scorer.images(images[i : i + size]) for i in range(0, len(images), size)])


class MetaClipBalanceStep(Step):
    """MetaCLIP balancing (Xu et al. 2024, Algorithm 1): an entry matched by ``count`` samples keeps each
    with probability min(1, t / count); a sample stays if any of its entries keeps it."""

    kind = "metaclip_balance"
    local = False

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.entries = read_vocabulary(
            cfg.vocabulary, cfg.vocabulary_file, f"steps.{self.name}.vocabulary_file"
        )
        self.matcher = PhraseMatcher(self.entries)

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        found = [" ".join(map(str, self.matcher.matches(c))) for c in batch.captions]
        return {"entries": np.array(found, dtype=str)}

    def apply(self, table: Table) -> Decision:
        matched = [[int(e) for e in text.split()] for text in table["entries"]]
        counts = np.bincount([e for row in matched for e in row], minlength=len(self.entries))
        keep_prob = np.minimum(1.0, self.cfg.t / np.maximum(counts, 1))
        balanced_out = np.array(
            [
                bool(row)
                and not any(seeded_uniform(table.seed, key, self.entries[e]) < keep_prob[e] for e in row)
                for key, row in zip(table.keys, matched, strict=True)
            ],
            dtype=bool,
        )
        unmatched = np.array([not row for row in matched], dtype=bool)
        reason = first_reason(len(table), [(unmatched, "no_metadata_match"), (balanced_out, "balanced_out")])
        decision = Decision.from_reasons(reason)
        decision.info.update(
            entries=len(self.entries),
            entries_matched=int((counts > 0).sum()),
            entries_over_t=int((counts > self.cfg.t).sum()),
            top_entries={
                self.entries[e]: int(counts[e]) for e in np.argsort(-counts, kind="stable")[:10] if counts[e]
            },
        )
        return decision
