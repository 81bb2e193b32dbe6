"""Duplicate removal across the whole input: exact (content hash), near (perceptual hash) and semantic
(image-embedding similarity). In every case the first sample in input order is kept and a later sample
is dropped when it matches an earlier kept one."""

from __future__ import annotations

import hashlib

import numpy as np

from vlmforge.curate.base import Step
from vlmforge.curate.batch import Batch, Decision, Table, first_reason
from vlmforge.curate.scoring import image_embeddings


def phash(image: object) -> np.ndarray:
    """64-bit DCT perceptual hash (Zauner 2010, as in the imagehash package): 32x32 grey, 2-D DCT-II, the
    8x8 lowest frequencies compared with their median; returned as 8 packed bytes."""
    from PIL import Image
    from scipy.fft import dct

    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)  # type: ignore[attr-defined]
    low = dct(dct(grey, axis=0, norm="ortho"), axis=1, norm="ortho")[:8, :8]
    return np.packbits(low > np.median(low))


def greedy_duplicates(lims: np.ndarray, neighbours: np.ndarray, n: int) -> np.ndarray:
    """Walk samples in order; a kept sample marks its later neighbours as duplicates."""
    dropped = np.zeros(n, dtype=bool)
    for i in range(n):
        if not dropped[i]:
            found = neighbours[lims[i] : lims[i + 1]]
            dropped[found[found > i]] = True
    return dropped


class ExactDedupStep(Step):
    kind = "exact_dedup"
    local = False

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        digests = []
        for raw, caption in zip(batch.raw, batch.captions, strict=True):
            content = hashlib.sha256(raw)
            if self.cfg.on == "image_and_caption":
                content.update(b"\0" + caption.encode("utf-8"))
            digests.append(content.hexdigest())
        return {"sha256": np.array(digests, dtype="<U64")}

    def apply(self, table: Table) -> Decision:
        _, first = np.unique(table["sha256"], return_index=True)
        duplicate = np.ones(len(table), dtype=bool)
        duplicate[first] = False
        return Decision.from_reasons(first_reason(len(table), [(duplicate, "duplicate")]))


class NearDedupStep(Step):
    kind = "near_dedup"
    local = False

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"phash": batch.cached("phash", lambda b: np.stack([phash(i) for i in b.images]))}

    def apply(self, table: Table) -> Decision:
        import faiss

        codes = np.ascontiguousarray(table["phash"], dtype=np.uint8).reshape(len(table), 8)
        index = faiss.IndexBinaryFlat(64)
        index.add(codes)
        lims, _, neighbours = index.range_search(codes, self.cfg.max_distance + 1)  # distance < radius
        duplicate = greedy_duplicates(lims, neighbours, len(table))
        nearest = index.search(codes, 2)[0][:, 1] if len(table) > 1 else np.full(len(table), 64)
        reason = first_reason(len(table), [(duplicate, "near_duplicate")])
        return Decision.from_reasons(reason, nearest_bits=nearest.astype(np.float64))


class EmbeddingDedupStep(Step):
    kind = "embedding_dedup"
    local = False

    def measure(self, batch: Batch) -> dict[str, np.ndarray]:
        return {"embedding": image_embeddings(batch, self.resources.scorer())}

    def apply(self, table: Table) -> Decision:
        import faiss

        embeddings = np.ascontiguousarray(table["embedding"], dtype=np.float32)
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(embeddings)
        # inner-product range search returns similarities above the radius; nudge it to include it
        radius = float(np.nextafter(np.float32(self.cfg.min_similarity), np.float32(-1)))
        lims, _, neighbours = index.range_search(embeddings, radius)
        duplicate = greedy_duplicates(lims, neighbours, len(table))
        nearest = index.search(embeddings, 2)[0][:, 1] if len(table) > 1 else np.zeros(len(table))
        reason = first_reason(len(table), [(duplicate, "semantic_duplicate")])
        return Decision.from_reasons(reason, nearest_similarity=nearest.astype(np.float64))
